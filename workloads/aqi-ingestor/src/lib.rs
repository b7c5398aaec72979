//! aqi-ingestor: polls Sensor.Community snapshots, computes the UK Daily Air Quality Index of
//! PM10 and PM2.5, and writes every reading that is new to InfluxDB 1.x.
//!
//! The pipeline of one poll, one module per step:
//! [`fetch`] (conditional GET or file) → `snapshot` (incremental parse into borrowed
//! `record`s) → `ingest` (timestamp, [`watermark`] admission) → `transform` (validation in
//! `values`, banding in `daqi`, line protocol) → [`sink`] (InfluxDB or stdout), driven by
//! [`poll`]; `store` reads the watermarks back at start-up and [`app`] runs the loop.
//!
//! Public is what another crate uses: [`app::run`] and [`cli::Cli`] for the binary, and a
//! [`poll::Poller`] put together by hand (with [`timestamp`] to write expected times) for the
//! integration tests in `tests/`. The rest is private to the crate.

#![warn(missing_docs)]

pub mod app;
pub mod cli;
mod daqi;
pub mod fetch;
mod ingest;
mod means;
mod metrics;
pub mod poll;
mod record;
mod region;
mod service;
pub mod sink;
mod snapshot;
mod store;
pub mod timestamp;
mod transform;
mod values;
pub mod watermark;
mod windows;
