//! The binary's defaults, in one place: its flags' defaults and [`crate::Config::default`] both
//! read them, so a test's server and a deployed one differ only where a test says so.

/// UDP address of plaintext CoAP (`coap://`).
pub const BIND: &str = "0.0.0.0:5683";
/// UDP address of CoAP over DTLS (`coaps://`, RFC 7252 §12.7's port).
pub const DTLS_BIND: &str = "0.0.0.0:5684";
pub const DEFAULT_PLACE: &str = "room1";
pub const RETRY_AFTER_SECONDS: u32 = 5;
pub const RATE_LIMIT: u32 = 0;
pub const RATE_BURST: u32 = 0;
pub const DEDUP_CAPACITY: usize = 100_000;
pub const DEDUP_PER_SOURCE: usize = 10_000;
pub const NEW_TAGS_PER_SERVER: usize = 50_000;
pub const NEW_TAGS_PER_SOURCE: u32 = 10_000;
pub const BATCH_SIZE: u32 = 1_000;
pub const BATCH_IN_FLIGHT: u32 = 2;
pub const BATCH_LINGER_MS: u64 = 0;
pub const QUEUE_CAPACITY: usize = 50_000;
pub const DRAIN_SECONDS: u64 = 20;
/// Reports of the answers to InfluxDB: one point a minute per pod.
pub const ANSWER_REPORT_SECONDS: u64 = 60;
