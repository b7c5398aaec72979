//! Counters shared by every exchange, exported on /metrics and summarised at the end of a run.

use prometheus_client::metrics::counter::Counter;

iot_common::metric_set! {
    pub struct Stats in "sim" {
        /// CoAP requests sent (first transmissions)
        #[metric("requests_sent")]
        pub sent: Counter,
        /// Retransmissions after an ACK timeout
        #[metric("retransmissions")]
        pub retransmitted: Counter,
        /// Readings the server confirmed stored
        #[metric("readings_acked")]
        pub acked: Counter,
        /// 5.03 answers (the reading is sent again after Max-Age)
        pub unavailable: Counter,
        /// Exchanges that got no answer after MAX_RETRANSMIT
        pub timeouts: Counter,
        /// Readings the server refused (4.xx)
        pub rejected: Counter,
        /// Readings given up on
        pub failed: Counter,
        /// Datagrams received that are not CoAP
        pub malformed: Counter,
        /// DTLS handshakes completed
        pub handshakes: Counter,
        /// DTLS handshakes that failed (no key, an alert from the server, no answer in time)
        pub handshake_failures: Counter,
        /// UDP sockets (source ports) opened by the client endpoints
        pub source_ports: Counter,
    }
}
