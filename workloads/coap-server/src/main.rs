//! coap-server's binary: reads its flags, wires the [`coap_server::Server`] to InfluxDB and the
//! HTTP side port, and shuts down on SIGTERM once the queued readings are written.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use coap_server::{Config, Devices, DtlsConfig, DtlsLimits, Server, defaults, devices};
use iot_common::http::{self, Readiness};
use iot_common::logging::{self, LogArgs};
use iot_common::runtime::{self, Threads};
use iot_common::{BatchConfig, InfluxArgs, InfluxClient, RetryPolicy, Shutdown};
use prometheus_client::registry::Registry;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "CoAP server that stores DHT temperature and humidity readings in InfluxDB",
    long_about = "CoAP server that stores DHT temperature and humidity readings in InfluxDB 1.x.\n\n\
Resources:\n  \
POST|PUT /sensors/dht/temperature   plain-text number in °C, e.g. 25.5\n  \
POST|PUT /sensors/dht/humidity      plain-text number in %, e.g. 41.9\n  \
GET      /.well-known/core          the list above, in link format (RFC 6690)\n\
Optional query: ?place=room2&sensor=dht-7 (tags; place defaults to --default-place).\n\n\
A confirmable reading is answered 2.04 only once InfluxDB has stored it, 4.00 if InfluxDB \
refused it for good, 5.03 with Max-Age while InfluxDB cannot take it, and a retransmitted \
request is answered again without being stored twice.\n\n\
Devices: with --devices-file, registered devices send over DTLS 1.2 with a pre-shared key \
(coaps://, port 5684): the PSK identity is the device's name, its readings are stored with \
sensor=<name> and its registered place, and a query that says otherwise gets 4.03. Plaintext \
coap:// is then closed unless --plaintext true.\n\n\
Examples:\n  \
coap-client-notls -m post -e 25.5 coap://127.0.0.1/sensors/dht/temperature\n  \
coap-server --devices-file devices.txt --plaintext true --bind 127.0.0.1:5683\n  \
coap-client-openssl -u dht-1 -k <key> -m post -e 25.5 coaps://127.0.0.1/sensors/dht/temperature",
    after_help = "Every flag can also be set by the environment variable shown in brackets."
)]
struct Args {
    /// UDP address to receive plaintext CoAP (coap://) on, when it is open (see --plaintext).
    #[arg(long, env = "COAP_BIND", default_value = defaults::BIND)]
    bind: SocketAddr,

    /// Registered devices, one per line: `NAME PLACE KEY` (blank-separated; `#` starts a
    /// comment). Turns DTLS on. The file is looked at every 2 s: devices added, re-keyed or
    /// removed take effect without a restart (a removed device's sessions end at once).
    #[arg(long, env = "DEVICES_FILE")]
    devices_file: Option<std::path::PathBuf>,

    /// In a cluster: the name of the Secret (device name → key) and the ConfigMap (device name
    /// → place) that hold the registry, in this pod's namespace. Turns DTLS on. Changes take
    /// effect within seconds (they are watched). The operator sets it to `<monitor>-devices`.
    #[arg(long, env = "DEVICES_FROM", conflicts_with = "devices_file")]
    devices_from: Option<String>,

    /// The namespace of --devices-from (default: the pod's own, from its service account).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,

    /// UDP address to receive CoAP over DTLS (coaps://) on, when devices are registered.
    #[arg(long, env = "COAP_DTLS_BIND", default_value = defaults::DTLS_BIND)]
    dtls_bind: SocketAddr,

    /// Whether plaintext coap://, where anyone may write, is open. Default: open without
    /// devices, closed with them.
    #[arg(long, env = "COAP_PLAINTEXT")]
    plaintext: Option<bool>,

    /// Established DTLS sessions kept at most, about 6 KB each; when full, the session quiet the
    /// longest is dropped (its device handshakes again when it next sends).
    #[arg(long, env = "DTLS_MAX_SESSIONS", default_value_t = DtlsLimits::default().sessions)]
    dtls_max_sessions: usize,

    /// DTLS handshakes in progress at most (past the stateless cookie exchange).
    #[arg(long, env = "DTLS_MAX_HANDSHAKES", default_value_t = DtlsLimits::default().handshakes)]
    dtls_max_handshakes: usize,

    /// Seconds a DTLS session may stay idle before it is dropped (the device then handshakes
    /// again).
    #[arg(long, env = "DTLS_SESSION_IDLE_SECONDS", default_value_t = DtlsLimits::default().session_idle.as_secs())]
    dtls_session_idle_seconds: u64,

    #[command(flatten)]
    influx: InfluxArgs,

    /// InfluxDB database the readings go to.
    #[arg(long, env = "INFLUX_DB", default_value = "dht")]
    influx_db: String,

    /// How long the database keeps readings (its retention policy's duration: `30d`, `12w`,
    /// `24h`; `INF` or empty: forever). A reading whose `ts=` is older is refused with 4.00 at
    /// once, since InfluxDB would drop it.
    #[arg(long, env = "INFLUX_RETENTION", default_value = "", value_parser = parse_retention)]
    retention: Retention,

    /// Create the database at start-up (turn off when the InfluxDB user may not create one).
    #[arg(long, env = "CREATE_DATABASE", default_value_t = true, action = clap::ArgAction::Set)]
    create_database: bool,

    /// Readings per InfluxDB write request, at most.
    #[arg(long, env = "BATCH_SIZE", default_value_t = defaults::BATCH_SIZE, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,

    /// InfluxDB write requests in flight at the same time, at most. Readings that arrive while
    /// this many writes are in flight gather and go out as one write when one of them ends, so
    /// batches grow with the load by themselves and InfluxDB never has more requests at once.
    #[arg(long, env = "BATCH_IN_FLIGHT", default_value_t = defaults::BATCH_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..=64))]
    batch_in_flight: u32,

    /// Upper bound, in milliseconds, on how long readings gather while a write slot is free but
    /// other writes are in flight (a write ending or a full batch sends them sooner). 0, the
    /// default, uses a free slot at once. A reading that finds no write in flight is always
    /// written at once, unless --batch-fixed-linger.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = defaults::BATCH_LINGER_MS)]
    batch_linger_ms: u64,

    /// Make every batch wait the whole linger (or until full), even when InfluxDB is idle: the
    /// fixed linger of earlier versions, kept to compare against in benchmarks.
    #[arg(long, env = "BATCH_FIXED_LINGER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    batch_fixed_linger: bool,

    /// Readings that may wait for a batch; beyond that new readings get 5.03 at once.
    #[arg(long, env = "QUEUE_CAPACITY", default_value_t = defaults::QUEUE_CAPACITY)]
    queue_capacity: usize,

    /// Upper bound, in seconds, on writing what is queued after SIGTERM. Readings not written by
    /// then are not answered (their senders send them again, to another replica) and never
    /// counted as stored. Set the pod's terminationGracePeriodSeconds a few seconds above it.
    #[arg(long, env = "DRAIN_SECONDS", default_value_t = defaults::DRAIN_SECONDS)]
    drain_seconds: u64,

    /// Max-Age of a 5.03 answer: when clients should send the reading again, in seconds.
    #[arg(long, env = "RETRY_AFTER_SECONDS", default_value_t = defaults::RETRY_AFTER_SECONDS)]
    retry_after_seconds: u32,

    /// Place tag of readings that do not name one (`?place=`).
    #[arg(long, env = "DEFAULT_PLACE", default_value = defaults::DEFAULT_PLACE)]
    default_place: String,

    /// Requests per second taken from one source address (IP); beyond that its datagrams are
    /// dropped unanswered and counted (`coap_rate_limited_total`). 0, the default, sets no
    /// limit: readings from many sensors behind one address (NAT, a load test) come at any rate.
    #[arg(long, env = "RATE_LIMIT", default_value_t = defaults::RATE_LIMIT)]
    rate_limit: u32,

    /// Requests one source address may send at once, above its rate (0: one second's worth).
    #[arg(long, env = "RATE_BURST", default_value_t = defaults::RATE_BURST)]
    rate_burst: u32,

    /// Exchanges remembered to recognise retransmissions (about 100 bytes each).
    #[arg(long, env = "DEDUP_CAPACITY", default_value_t = defaults::DEDUP_CAPACITY)]
    dedup_capacity: usize,

    /// Exchanges remembered per source address, at most: a source beyond it forgets its own
    /// oldest, so a flood from one source cannot push out the exchanges of others.
    #[arg(long, env = "DEDUP_PER_SOURCE", default_value_t = defaults::DEDUP_PER_SOURCE)]
    dedup_per_source: usize,

    /// New `place` and `sensor` values this server takes from anonymous senders, from all of
    /// them together; beyond that a reading with a new value gets 4.03 and nothing is stored.
    /// Values already in the database (read at start-up) are not new. Keep it well below
    /// InfluxDB's `max-values-per-tag`, which once reached refuses new values to everyone.
    #[arg(long, env = "NEW_TAGS_PER_SERVER", default_value_t = defaults::NEW_TAGS_PER_SERVER)]
    new_tags_per_server: usize,

    /// New `place` and `sensor` values one source address (IP) may bring, at most. A load
    /// generator brings one sensor per request in flight from one address.
    #[arg(long, env = "NEW_TAGS_PER_SOURCE", default_value_t = defaults::NEW_TAGS_PER_SOURCE)]
    new_tags_per_source: u32,

    /// Seconds between the reports of this server's answers written to InfluxDB (measurement
    /// `coap_server`: datagrams, refused, unavailable), which Grafana's IngestFailing alert
    /// reads. 0 writes none.
    #[arg(long, env = "ANSWER_REPORT_SECONDS", default_value_t = defaults::ANSWER_REPORT_SECONDS)]
    answer_report_seconds: u64,

    /// The `pod` tag of those reports (in a pod, its name).
    #[arg(long, env = "HOSTNAME", default_value = "coap-server")]
    pod_name: String,

    /// HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9090")]
    http_addr: SocketAddr,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    BindUdp(#[from] coap_server::BindError),
    #[error(transparent)]
    BindHttp(#[from] http::BindError),
    #[error("cannot build the InfluxDB client: {0}")]
    Client(#[from] iot_common::influx::HttpError),
    #[error(transparent)]
    Devices(#[from] devices::FileError),
}

fn main() -> std::process::ExitCode {
    return_large_buffers_to_the_system();
    let args = Args::parse();
    logging::init(&args.log);
    runtime::run(Threads::PerCore, async {
        match run(args).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "coap-server failed");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

async fn run(args: Args) -> Result<(), Error> {
    let client = InfluxClient::new(&args.influx, &args.influx_db)?;
    let mut config = Config {
        default_place: args.default_place,
        retry_after_secs: args.retry_after_seconds,
        retention_ms: args.retention.0,
        rate_limit: args.rate_limit,
        rate_burst: args.rate_burst,
        dedup_capacity: args.dedup_capacity,
        dedup_per_source: args.dedup_per_source,
        new_tags_per_server: args.new_tags_per_server,
        new_tags_per_source: args.new_tags_per_source,
        batch: BatchConfig {
            max_points: args.batch_size as usize,
            linger: Duration::from_millis(args.batch_linger_ms),
            fixed_linger: args.batch_fixed_linger,
            max_in_flight: args.batch_in_flight as usize,
            queue_capacity: args.queue_capacity,
            retry: RetryPolicy::interactive(),
        },
        plaintext: args
            .plaintext
            .unwrap_or(args.devices_file.is_none() && args.devices_from.is_none()),
        dtls: None,
    };
    let mut follow = None;
    let devices = if let Some(path) = &args.devices_file {
        let devices = Devices::new(devices::read_file(path)?);
        tracing::info!(path = %path.display(), devices = devices.current().len(), "devices registered");
        follow = Some(tokio::spawn(devices::follow_file(
            path.clone(),
            devices.clone(),
        )));
        Some(devices)
    } else if let Some(name) = &args.devices_from {
        // Nobody is admitted until the registry has been read.
        let devices = Devices::default();
        let (name, namespace, registry) = (name.clone(), args.namespace.clone(), devices.clone());
        follow = Some(tokio::spawn(async move {
            if let Err(e) = coap_server::kube_devices::follow_kube(name, namespace, registry).await
            {
                tracing::error!(error = %e, "device registry not followed; no device is admitted");
            }
        }));
        Some(devices)
    } else {
        None
    };
    if let Some(devices) = devices {
        config.dtls = Some(DtlsConfig {
            addr: args.dtls_bind,
            devices,
            limits: DtlsLimits {
                sessions: args.dtls_max_sessions,
                handshakes: args.dtls_max_handshakes,
                session_idle: Duration::from_secs(args.dtls_session_idle_seconds),
                ..DtlsLimits::default()
            },
        });
    }
    let mut registry = Registry::default();
    let ready = Readiness::default();
    let server = Server::bind(
        args.bind,
        client.clone(),
        config,
        &mut registry,
        ready.clone(),
    )?;

    // Set once the queued readings are written, after the signal stopped the CoAP side.
    let stopped = Shutdown::new();
    let side_port = http::spawn(args.http_addr, registry, ready.clone(), stopped.wait()).await?;
    let report = (args.answer_report_seconds > 0).then(|| {
        tokio::spawn(coap_server::report::report_answers(
            client.clone(),
            server.answer_counts(),
            args.pod_name.clone(),
            Duration::from_secs(args.answer_report_seconds),
            stopped.clone(),
        ))
    });
    let watcher = tokio::spawn(coap_server::watch_influx(
        client,
        args.create_database,
        server.known_tags(),
        ready,
        stopped.clone(),
    ));
    tracing::info!(
        coap = ?server.local_addr(),
        coaps = ?server.dtls_addr(),
        http = %side_port.addr,
        influx = %args.influx.influx_url,
        database = %args.influx_db,
        "coap-server listening"
    );

    let drain = Duration::from_secs(args.drain_seconds);
    let drained = server.run(iot_common::shutdown::signal(), drain).await;
    stopped.trigger();
    // Not awaited: a ping to a hung InfluxDB would hold the exit up to its timeout.
    watcher.abort();
    let _ = watcher.await;
    if let Some(follow) = follow {
        follow.abort();
    }
    // The last report (the counts since the previous one) only where InfluxDB just took the
    // queue: a hung InfluxDB must not hold the exit past the drain bound.
    if let Some(report) = report {
        if drained {
            if tokio::time::timeout(LAST_REPORT_WITHIN, report)
                .await
                .is_err()
            {
                tracing::warn!("last answer report not written in time");
            }
        } else {
            report.abort();
        }
    }
    side_port.join().await;
    tracing::info!("coap-server stopped");
    Ok(())
}

/// How long the last answer report may take at exit.
const LAST_REPORT_WITHIN: Duration = Duration::from_secs(1);

/// Large, short-lived buffers between long-lived ones fragment glibc's heap: with OpenSSL's
/// 17–22 KB DTLS buffers, a server that had cycled 10,000 devices through 2,000 sessions held
/// 150 MB instead of 106. Allocated with mmap from 16 KB up, such buffers go back to the system
/// when freed. Mbed TLS's sessions now stay under 16 KB; write batches can pass it.
fn return_large_buffers_to_the_system() {
    // SAFETY: mallopt only sets a malloc parameter; called before any other thread exists.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 16 * 1024) };
    if ok != 1 {
        eprintln!("coap-server: mallopt(M_MMAP_THRESHOLD) refused; memory may fragment");
    }
}

/// A retention policy's duration in milliseconds; `None` keeps points forever.
#[derive(Clone, Copy, Debug)]
struct Retention(Option<i64>);

/// InfluxQL's durations as the operator's spec allows them: a whole number of seconds, minutes,
/// hours, days or weeks, or `INF`.
fn parse_retention(text: &str) -> Result<Retention, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("INF") {
        return Ok(Retention(None));
    }
    let unit_ms: i64 = match text.as_bytes().last() {
        Some(b's') => 1_000,
        Some(b'm') => 60_000,
        Some(b'h') => 3_600_000,
        Some(b'd') => 86_400_000,
        Some(b'w') => 7 * 86_400_000,
        _ => {
            return Err(format!(
                "'{text}' is not a duration such as 30d, 12w, 24h or INF"
            ));
        }
    };
    let count: i64 = text[..text.len() - 1]
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30d, 12w, 24h or INF"))?;
    match count.checked_mul(unit_ms) {
        // InfluxDB reads a zero duration as forever.
        Some(0) => Ok(Retention(None)),
        Some(ms) if ms > 0 => Ok(Retention(Some(ms))),
        _ => Err(format!("'{text}' is out of range")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_influxql_durations() {
        let ms = |t: &str| parse_retention(t).map(|r| r.0);
        assert_eq!(ms("30d"), Ok(Some(30 * 86_400_000)));
        assert_eq!(ms("12w"), Ok(Some(12 * 7 * 86_400_000)));
        assert_eq!(ms("1h"), Ok(Some(3_600_000)));
        assert_eq!(ms("90s"), Ok(Some(90_000)));
        assert_eq!(ms("INF"), Ok(None));
        assert_eq!(ms(""), Ok(None));
        assert_eq!(ms("0d"), Ok(None));
        for bad in ["30", "d", "-1h", "1.5h", "30y"] {
            assert!(ms(bad).is_err(), "{bad}");
        }
    }
}
