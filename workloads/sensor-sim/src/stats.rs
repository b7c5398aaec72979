//! Counters shared by every exchange, exported on /metrics and summarised at the end of a run.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

#[derive(Default)]
pub struct Stats {
    pub sent: Counter,
    pub retransmitted: Counter,
    pub acked: Counter,
    pub unavailable: Counter,
    pub timeouts: Counter,
    pub rejected: Counter,
    pub failed: Counter,
    pub malformed: Counter,
}

impl Stats {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sim");
        r.register(
            "requests_sent",
            "CoAP requests sent (first transmissions)",
            self.sent.clone(),
        );
        r.register(
            "retransmissions",
            "Retransmissions after an ACK timeout",
            self.retransmitted.clone(),
        );
        r.register(
            "readings_acked",
            "Readings the server confirmed stored",
            self.acked.clone(),
        );
        r.register(
            "unavailable",
            "5.03 answers (the reading is sent again after Max-Age)",
            self.unavailable.clone(),
        );
        r.register(
            "timeouts",
            "Exchanges that got no answer after MAX_RETRANSMIT",
            self.timeouts.clone(),
        );
        r.register(
            "rejected",
            "Readings the server refused (4.xx)",
            self.rejected.clone(),
        );
        r.register("failed", "Readings given up on", self.failed.clone());
        r.register(
            "malformed",
            "Datagrams received that are not CoAP",
            self.malformed.clone(),
        );
    }
}
