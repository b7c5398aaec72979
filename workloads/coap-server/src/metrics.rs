//! The server's Prometheus metrics (the writer registers its own under `influx_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub received: Counter,
    pub stored: Counter,
    pub rejected: Family<Reason, Counter>,
    pub unavailable: Family<Reason, Counter>,
    pub duplicates: Counter,
    pub malformed: Family<Reason, Counter>,
    pub send_errors: Counter,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("coap");
        r.register(
            "datagrams_received",
            "Datagrams received",
            m.received.clone(),
        );
        r.register(
            "readings_stored",
            "Readings written to InfluxDB and acknowledged",
            m.stored.clone(),
        );
        r.register(
            "requests_rejected",
            "Requests answered with a 4.xx error, by reason",
            m.rejected.clone(),
        );
        r.register(
            "readings_unavailable",
            "Readings answered 5.03 (InfluxDB down or write queue full), by reason",
            m.unavailable.clone(),
        );
        r.register(
            "duplicates",
            "Retransmissions recognised and not stored again",
            m.duplicates.clone(),
        );
        r.register(
            "malformed",
            "Datagrams that are not valid CoAP, dropped or answered RST",
            m.malformed.clone(),
        );
        r.register(
            "send_errors",
            "Answers that could not be sent",
            m.send_errors.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&Reason { reason }).inc();
    }

    pub fn malformed(&self, reason: &'static str) {
        self.malformed.get_or_create(&Reason { reason }).inc();
    }

    pub fn unavailable(&self, reason: &'static str) {
        self.unavailable.get_or_create(&Reason { reason }).inc();
    }
}
