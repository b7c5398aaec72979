//! The server's Prometheus metrics (the writer registers its own under `influx_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

iot_common::metric_set! {
    #[derive(Clone)]
    pub struct Metrics in "coap" {
        /// Datagrams received
        #[metric("datagrams_received")]
        pub received: Counter,
        /// Readings written to InfluxDB and acknowledged
        #[metric("readings_stored")]
        pub stored: Counter,
        /// Requests answered with a 4.xx error, by reason
        #[metric("requests_rejected")]
        pub rejected: Family<Reason, Counter>,
        /// Readings answered 5.03 (InfluxDB down or write queue full), by reason
        #[metric("readings_unavailable")]
        pub unavailable: Family<Reason, Counter>,
        /// Retransmissions recognised and not stored again
        pub duplicates: Counter,
        /// Datagrams that are not valid CoAP, dropped or answered RST
        pub malformed: Family<Reason, Counter>,
        /// Answers that could not be sent
        pub send_errors: Counter,
        /// Answers to non-confirmable requests cut to stay within the amplification bound: sent
        /// without payload, or replaced by RST
        #[metric("answers_unamplified")]
        pub unamplified: Family<Reason, Counter>,
        /// Datagrams dropped by the per-source rate limit
        pub rate_limited: Counter,
    }
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        m.register_in(registry);
        m
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&Reason { reason }).inc();
    }

    pub fn malformed(&self, reason: &'static str) {
        self.malformed.get_or_create(&Reason { reason }).inc();
    }

    pub fn unamplified(&self, how: &'static str) {
        self.unamplified
            .get_or_create(&Reason { reason: how })
            .inc();
    }

    pub fn unavailable(&self, reason: &'static str) {
        self.unavailable.get_or_create(&Reason { reason }).inc();
    }
}
