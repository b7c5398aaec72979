//! Process plumbing shared by the operator and the workloads: the HTTP side port
//! ([`http`]: `/metrics`, `/healthz`, `/readyz`), [`logging`], graceful [`shutdown`], the async
//! [`runtime`], [`random`] strings, [`udp`] sockets and declared [`metrics`] sets; and the AQI
//! [`region`], which the operator resolves and the ingestor obeys.
//!
//! With the `influx` feature (on by default; the operator and sensor-sim leave it off, so they
//! do not build an HTTP client): the InfluxDB 1.x writer — [`lineproto`], [`influx`] (client),
//! [`batch`] (batching writer), [`retry`] (back-off) and [`verdict`] (what a write's result
//! means for its points). With `load-progress`: the
//! [`load_progress`] line that `sensor-sim load --json` prints and the operator reads. With
//! `backup-result`: the [`backup_result`] line `iot-backup` leaves as its termination message and
//! the operator reads. With `coap`: [`coap`] messages, read and written without a copy per option. With `dtls`: [`dtls`]
//! sessions (DTLS 1.2, pre-shared keys, by OpenSSL) over those datagrams.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod random;
pub mod region;
pub mod runtime;
pub mod shutdown;
pub mod udp;

#[cfg(feature = "influx")]
pub mod batch;
#[cfg(feature = "coap")]
pub mod coap;
#[cfg(feature = "dtls")]
pub mod dtls;
#[cfg(feature = "influx")]
pub mod influx;
#[cfg(feature = "influx")]
pub mod lineproto;
#[cfg(feature = "influx")]
pub mod retry;
#[cfg(feature = "influx")]
pub mod verdict;

#[cfg(feature = "load-progress")]
pub mod load_progress;

#[cfg(feature = "backup-result")]
pub mod backup_result;

pub use shutdown::Shutdown;

#[cfg(feature = "influx")]
pub use batch::{BatchConfig, BatchWriter, Sink, SubmitError};
#[cfg(feature = "influx")]
pub use influx::{InfluxArgs, InfluxClient, QueryResult, Series, WriteError};
#[cfg(feature = "influx")]
pub use lineproto::Line;
#[cfg(feature = "influx")]
pub use retry::RetryPolicy;
#[cfg(feature = "influx")]
pub use verdict::Verdict;
