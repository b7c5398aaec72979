//! aqi-ingestor's integration tests, in one test binary (one link instead of one per file):
//! [`dry_run`] offline mode, [`replay`] real samples into a real InfluxDB, [`conditional`]
//! polling over HTTP, [`resilience`] the ingestor as a service through faults.
//!
//! Run one part: `cargo test -p aqi-ingestor --test ingestor replay::`.

mod common;
mod conditional;
mod dry_run;
mod replay;
mod resilience;
mod upstream;
