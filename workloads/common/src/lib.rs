//! Shared parts of the iot-operator workloads: the InfluxDB 1.x writer (line protocol, batching,
//! retry with back-off, auth), logging set-up and the HTTP side port (`/metrics`, `/healthz`,
//! `/readyz`).

pub mod batch;
pub mod http;
pub mod influx;
pub mod lineproto;
pub mod retry;
pub mod telemetry;

pub use batch::{BatchConfig, BatchWriter, SubmitError};
pub use influx::{InfluxArgs, InfluxClient, QueryResult, Series, WriteError};
pub use lineproto::Line;
pub use retry::RetryPolicy;
