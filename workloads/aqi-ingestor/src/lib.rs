//! aqi-ingestor: polls Sensor.Community snapshots, computes the UK Daily Air Quality Index of
//! PM10 and PM2.5, and writes every reading that is new to InfluxDB 1.x.
//!
//! The pipeline of one poll, one module per step:
//! [`fetch`] (conditional GET or file) → [`snapshot`] (incremental parse into borrowed
//! [`record`]s) → [`ingest`] (timestamp, [`watermark`] admission) → [`transform`] (validation in
//! [`values`], banding in [`daqi`], line protocol) → [`sink`] (InfluxDB or stdout), driven by
//! [`poll`]; [`store`] reads the watermarks back at start-up and [`app`] runs the loop.

pub mod app;
pub mod cli;
pub mod daqi;
pub mod fetch;
pub mod ingest;
pub mod means;
pub mod metrics;
pub mod poll;
pub mod record;
pub mod region;
pub mod service;
pub mod sink;
pub mod snapshot;
pub mod store;
pub mod timestamp;
pub mod transform;
pub mod values;
pub mod watermark;
pub mod windows;
