//! The server's Prometheus metrics (the writer registers its own under `influx_`), and the
//! totals of its answers that it also reports to InfluxDB ([`crate::report`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    pub(crate) reason: &'static str,
}

iot_common::metric_set! {
    #[derive(Clone)]
    pub(crate) struct Exported in "coap" {
        /// Datagrams received
        #[metric("datagrams_received")]
        pub(crate) received: Counter,
        /// Readings written to InfluxDB and acknowledged
        #[metric("readings_stored")]
        pub(crate) stored: Counter,
        /// Requests answered with a 4.xx error, by reason
        #[metric("requests_rejected")]
        pub(crate) rejected: Family<Reason, Counter>,
        /// Readings answered 5.03 (InfluxDB down or write queue full), by reason
        #[metric("readings_unavailable")]
        pub(crate) unavailable: Family<Reason, Counter>,
        /// Retransmissions recognised and not stored again
        pub(crate) duplicates: Counter,
        /// Datagrams that are not valid CoAP, dropped or answered RST
        pub(crate) malformed: Family<Reason, Counter>,
        /// Answers that could not be sent
        pub(crate) send_errors: Counter,
        /// Answers to non-confirmable requests cut to stay within the amplification bound: sent
        /// without payload, or replaced by RST
        #[metric("answers_unamplified")]
        pub(crate) unamplified: Family<Reason, Counter>,
        /// Datagrams dropped by the per-source rate limit
        pub(crate) rate_limited: Counter,
        /// DTLS handshakes past the cookie exchange, by outcome (ok, failed, over_limit)
        #[metric("dtls_handshakes")]
        pub(crate) dtls_handshakes: Family<Reason, Counter>,
        /// ClientHellos answered with a stateless HelloVerifyRequest (or dropped)
        #[metric("dtls_hello_verify")]
        pub(crate) dtls_hello_verify: Counter,
        /// Established DTLS sessions
        #[metric("dtls_sessions")]
        pub(crate) dtls_sessions: Gauge,
        /// Answers to devices dropped because their session ended before the answer was ready
        /// (the device handshakes again, retransmits, and the dedup cache answers)
        #[metric("dtls_answers_without_session")]
        pub(crate) dtls_answers_without_session: Counter,
        /// DTLS sessions dropped to make room for a new one (the least recently active)
        #[metric("dtls_sessions_evicted")]
        pub(crate) dtls_sessions_evicted: Counter,
        /// DTLS handshakes in progress (past the cookie exchange)
        #[metric("dtls_handshakes_in_progress")]
        pub(crate) dtls_handshakes_in_progress: Gauge,
        /// Requests over DTLS refused because their query contradicts the device registry
        #[metric("device_tags_refused")]
        pub(crate) device_tags_refused: Counter,
    }
}

/// The exported metrics, and the answer totals beside them: a labelled family cannot be summed
/// from outside, so refusals and 5.03 answers are also counted once more, unlabelled.
#[derive(Clone)]
pub(crate) struct Metrics {
    exported: Exported,
    pub(crate) answers: AnswerCounts,
}

impl std::ops::Deref for Metrics {
    type Target = Exported;

    fn deref(&self) -> &Exported {
        &self.exported
    }
}

/// Running totals of what the server received and how it answered; clones share them.
#[derive(Clone, Debug, Default)]
pub struct AnswerCounts {
    /// The same counter as `coap_datagrams_received_total`.
    pub(crate) datagrams: Counter,
    /// Requests answered 4.xx (every reason of `coap_requests_rejected_total`).
    pub(crate) refused: Counter,
    /// Readings answered 5.03 (every reason of `coap_readings_unavailable_total`).
    pub(crate) unavailable: Counter,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let exported = Exported::default();
        exported.register_in(registry);
        let answers = AnswerCounts {
            datagrams: exported.received.clone(),
            ..AnswerCounts::default()
        };
        Metrics { exported, answers }
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&Reason { reason }).inc();
        self.answers.refused.inc();
    }

    pub(crate) fn malformed(&self, reason: &'static str) {
        self.malformed.get_or_create(&Reason { reason }).inc();
    }

    pub(crate) fn unamplified(&self, how: &'static str) {
        self.unamplified
            .get_or_create(&Reason { reason: how })
            .inc();
    }

    pub(crate) fn handshake(&self, outcome: &'static str) {
        self.dtls_handshakes
            .get_or_create(&Reason { reason: outcome })
            .inc();
    }

    pub(crate) fn unavailable(&self, reason: &'static str) {
        self.unavailable.get_or_create(&Reason { reason }).inc();
        self.answers.unavailable.inc();
    }
}
