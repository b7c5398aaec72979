//! coap-server: takes DHT sensor readings over CoAP (UDP) and stores them in InfluxDB 1.x.
//!
//! A confirmable reading is acknowledged (2.04 Changed) only once InfluxDB has it; while
//! InfluxDB cannot take it the answer is 5.03 Service Unavailable with Max-Age, so a client
//! knows to send it again and nothing is lost silently; one InfluxDB refuses for good gets 4.00,
//! so the client does not send it again.
//!
//! The library is the whole server; the binary parses its flags and wires it to InfluxDB. A
//! [`Server`] writes to any [`Sink`], so tests run it in-process, on a loopback socket, against
//! an in-memory sink, and talk raw CoAP to it.

mod cardinality;
mod dedup;
pub mod defaults;
pub mod devices;
pub mod kube_devices;
mod metrics;
mod ratelimit;
pub mod report;
mod resource;
mod secure;
mod server;
mod watch;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iot_common::batch::WriterMetrics;
use iot_common::http::Readiness;
use iot_common::{BatchConfig, BatchWriter, Sink, udp};
use prometheus_client::registry::Registry;

pub use self::devices::{Device, Devices};
pub use self::secure::{Limits as DtlsLimits, SetupError};
pub use self::watch::watch_influx;

/// What the server is told at start: the binary's flags, read.
#[derive(Clone, Debug)]
pub struct Config {
    /// Place tag of readings that do not name one.
    pub default_place: String,
    /// Max-Age of a 5.03 answer: when clients should send the reading again, in seconds.
    pub retry_after_secs: u32,
    /// How long the database keeps points, in milliseconds (`None`: forever). A reading whose
    /// sensor time is older is refused at once, since the database would drop it.
    pub retention_ms: Option<i64>,
    /// Requests per second taken from one source address (0: no limit).
    pub rate_limit: u32,
    /// Requests one source address may send at once, above its rate (0: one second's worth).
    pub rate_burst: u32,
    /// Exchanges remembered to recognise retransmissions.
    pub dedup_capacity: usize,
    /// Exchanges remembered per source address, at most.
    pub dedup_per_source: usize,
    /// New `place` and `sensor` values taken from anonymous senders, from all of them together.
    pub new_tags_per_server: usize,
    /// New `place` and `sensor` values one source address may bring, at most.
    pub new_tags_per_source: u32,
    /// How readings are gathered into writes.
    pub batch: BatchConfig,
    /// Whether plaintext CoAP (`coap://`) is open. With DTLS on, only a registered device may
    /// write, so plaintext, where anyone may, is closed unless asked for.
    pub plaintext: bool,
    /// CoAP over DTLS (`coaps://`) for registered devices, if on.
    pub dtls: Option<DtlsConfig>,
}

/// `coaps://`: where, for whom, and how much state it may keep.
#[derive(Clone)]
pub struct DtlsConfig {
    /// UDP address to take DTLS on (port 0 picks a free one).
    pub addr: SocketAddr,
    /// The registered devices; replace its registry to add, re-key or revoke them.
    pub devices: Devices,
    pub limits: DtlsLimits,
}

impl std::fmt::Debug for DtlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The registry holds keys: only their number is shown.
        f.debug_struct("DtlsConfig")
            .field("addr", &self.addr)
            .field("devices", &self.devices.current().len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The binary's defaults ([`defaults`]), so that a test states only what it is about.
impl Default for Config {
    fn default() -> Self {
        Config {
            default_place: defaults::DEFAULT_PLACE.into(),
            retry_after_secs: defaults::RETRY_AFTER_SECONDS,
            retention_ms: None,
            rate_limit: defaults::RATE_LIMIT,
            rate_burst: defaults::RATE_BURST,
            dedup_capacity: defaults::DEDUP_CAPACITY,
            dedup_per_source: defaults::DEDUP_PER_SOURCE,
            new_tags_per_server: defaults::NEW_TAGS_PER_SERVER,
            new_tags_per_source: defaults::NEW_TAGS_PER_SOURCE,
            batch: BatchConfig {
                max_points: defaults::BATCH_SIZE as usize,
                max_in_flight: defaults::BATCH_IN_FLIGHT as usize,
                linger: Duration::from_millis(defaults::BATCH_LINGER_MS),
                queue_capacity: defaults::QUEUE_CAPACITY,
                ..BatchConfig::default()
            },
            plaintext: true,
            dtls: None,
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Dtls(#[from] SetupError),
    #[error("nothing to listen on: plaintext CoAP is closed and DTLS is off")]
    NothingOpen,
}

/// A bound server with its writer running; [`Server::run`] takes requests.
pub struct Server {
    shared: Arc<server::Shared>,
    writer: BatchWriter<server::PendingAnswer>,
    addr: Option<SocketAddr>,
    dtls_addr: Option<SocketAddr>,
}

/// Binds a UDP socket with the server's buffers; the socket and the address it got.
fn bind_udp(addr: SocketAddr) -> Result<(udp::Datagrams, SocketAddr), BindError> {
    let bind_error = |source| BindError::Bind { addr, source };
    let socket = udp::bind(addr, UDP_BUFFERS).map_err(bind_error)?;
    let bound = socket.local_addr().unwrap_or(addr);
    Ok((udp::Datagrams::new(socket).map_err(bind_error)?, bound))
}

/// Large buffers: a burst of readings must not overflow the kernel's default receive buffer,
/// or the clients' retransmissions (seconds later) would throttle them.
const UDP_BUFFERS: udp::Buffers = udp::Buffers {
    recv: 8 << 20,
    send: 8 << 20,
};

/// Tag values read from the database at most; InfluxDB's own limit keeps them fewer.
const MAX_TAGS_READ: usize = 500_000;

impl Server {
    /// Binds `addr` for plaintext CoAP (port 0 picks a free one; not bound when
    /// `config.plaintext` is false) and `config.dtls`'s address for DTLS, and starts the batch
    /// writer on `sink`. Its metrics go to `registry`; `ready` follows the writes' outcomes (set
    /// once one is stored, cleared while the sink is unreachable). Must be called within a
    /// Tokio runtime.
    pub fn bind<S: Sink>(
        addr: SocketAddr,
        sink: S,
        config: Config,
        registry: &mut Registry,
        ready: Readiness,
    ) -> Result<Server, BindError> {
        let metrics = metrics::Metrics::new(registry);
        let (datagrams, addr) = match config.plaintext {
            true => bind_udp(addr).map(|(d, a)| (Some(d), Some(a)))?,
            false => (None, None),
        };
        let (secure, dtls_addr) = match &config.dtls {
            Some(dtls) => {
                let (datagrams, bound) = bind_udp(dtls.addr)?;
                let sessions =
                    secure::Sessions::new(dtls.devices.clone(), dtls.limits, metrics.clone())?;
                (
                    Some(server::SecureSide::new(datagrams, sessions)),
                    Some(bound),
                )
            }
            None => (None, None),
        };
        if datagrams.is_none() && secure.is_none() {
            return Err(BindError::NothingOpen);
        }
        let writer_metrics = WriterMetrics::new(registry);
        let shared = server::Shared::new(
            datagrams,
            secure,
            dedup::DedupCache::new(
                config.dedup_capacity,
                config.dedup_per_source,
                dedup::EXCHANGE_LIFETIME,
            ),
            cardinality::NewTags::new(
                config.new_tags_per_server,
                config.new_tags_per_source,
                config.new_tags_per_server.saturating_add(MAX_TAGS_READ),
            ),
            metrics,
            server::Settings {
                default_place: config.default_place,
                retry_after_secs: config.retry_after_secs,
                retention_ms: config.retention_ms,
                rate_limit: config.rate_limit,
                rate_burst: if config.rate_burst == 0 {
                    config.rate_limit
                } else {
                    config.rate_burst
                },
            },
            ready,
        );
        let writer = BatchWriter::spawn(
            sink,
            config.batch,
            writer_metrics,
            server::on_written(shared.clone()),
        );
        Ok(Server {
            shared,
            writer,
            addr,
            dtls_addr,
        })
    }

    /// The address it takes plaintext CoAP on, unless plaintext is closed.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// The address it takes DTLS on, if on.
    pub fn dtls_addr(&self) -> Option<SocketAddr> {
        self.dtls_addr
    }

    /// The running totals of what it received and how it answered, for [`report::report_answers`].
    pub fn answer_counts(&self) -> report::AnswerCounts {
        self.shared.answer_counts()
    }

    /// A handle that tells the server which tag values the database holds already.
    pub fn known_tags(&self) -> KnownTags {
        KnownTags(self.shared.clone())
    }

    /// Takes requests until `shutdown` resolves, then writes and answers what is queued, for
    /// `drain` at most. Readings not written by then are not answered (their senders send them
    /// again) and never counted as stored. Whether everything queued was written in time.
    pub async fn run(self, shutdown: impl Future<Output = ()>, drain: Duration) -> bool {
        server::serve(self.shared, &self.writer, shutdown).await;
        tracing::info!(within_s = drain.as_secs(), "flushing queued readings");
        let drained = self.writer.close_within(drain).await;
        if !drained {
            tracing::warn!(
                within_s = drain.as_secs(),
                "queued readings not all written in time; left unanswered"
            );
        }
        drained
    }
}

/// Tells a running [`Server`] the `place` and `sensor` values the database holds, so that only
/// values it does not hold count as new.
#[derive(Clone)]
pub struct KnownTags(Arc<server::Shared>);

impl KnownTags {
    /// Adds values the database holds.
    pub fn learn<'v>(
        &self,
        places: impl IntoIterator<Item = &'v str>,
        sensors: impl IntoIterator<Item = &'v str>,
    ) {
        self.0.learn_tags(places, sensors);
    }
}
