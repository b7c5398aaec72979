//! aqi-ingestor's integration tests, in one test binary (one link instead of one per file):
//! [`dry_run`] offline mode, [`replay`] real samples into a real InfluxDB, [`conditional`]
//! polling over HTTP, [`resilience`] the ingestor as a service through faults, [`fallback`]
//! computed 24-hour means, [`region`] regional deployments, [`proxy`] InfluxDB behind a proxy that
//! answers 413 and 429.
//!
//! Run one part: `cargo test -p aqi-ingestor --test ingestor replay::`.

mod api;
mod common;
mod conditional;
mod dry_run;
mod fallback;
mod proxy;
mod region;
mod replay;
mod resilience;
mod upstream;
