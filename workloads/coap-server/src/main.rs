//! coap-server: takes DHT sensor readings over CoAP (UDP) and stores them in InfluxDB 1.x.
//!
//! A confirmable reading is acknowledged (2.04 Changed) only once InfluxDB has it; while
//! InfluxDB cannot take it the answer is 5.03 Service Unavailable with Max-Age, so a client
//! knows to send it again and nothing is lost silently.

mod dedup;
mod metrics;
mod resource;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use iot_common::batch::WriterMetrics;
use iot_common::http::{self, Readiness};
use iot_common::logging::{self, LogArgs};
use iot_common::runtime::{self, Threads};
use iot_common::{BatchConfig, BatchWriter, InfluxArgs, InfluxClient, RetryPolicy, Shutdown, udp};
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
A confirmable reading is answered 2.04 only once InfluxDB has stored it, 5.03 with Max-Age \
while InfluxDB cannot, and a retransmitted request is answered again without being stored twice.\n\n\
Example:  coap-client-notls -m post -e 25.5 coap://127.0.0.1/sensors/dht/temperature",
    after_help = "Every flag can also be set by the environment variable shown in brackets."
)]
struct Args {
    /// UDP address to receive CoAP on.
    #[arg(long, env = "COAP_BIND", default_value = "0.0.0.0:5683")]
    bind: SocketAddr,

    #[command(flatten)]
    influx: InfluxArgs,

    /// InfluxDB database the readings go to.
    #[arg(long, env = "INFLUX_DB", default_value = "dht")]
    influx_db: String,

    /// Create the database at start-up (turn off when the InfluxDB user may not create one).
    #[arg(long, env = "CREATE_DATABASE", default_value_t = true, action = clap::ArgAction::Set)]
    create_database: bool,

    /// Readings per InfluxDB write request, at most.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_size: u32,

    /// InfluxDB write requests in flight at the same time, at most. Readings that arrive while
    /// this many writes are in flight gather and go out as one write when one of them ends, so
    /// batches grow with the load by themselves and InfluxDB never has more requests at once.
    #[arg(long, env = "BATCH_IN_FLIGHT", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    batch_in_flight: u32,

    /// Upper bound, in milliseconds, on how long readings gather while a write slot is free but
    /// other writes are in flight (a write ending or a full batch sends them sooner). 0, the
    /// default, uses a free slot at once. A reading that finds no write in flight is always
    /// written at once, unless --batch-fixed-linger.
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 0)]
    batch_linger_ms: u64,

    /// Make every batch wait the whole linger (or until full), even when InfluxDB is idle: the
    /// fixed linger of earlier versions, kept to compare against in benchmarks.
    #[arg(long, env = "BATCH_FIXED_LINGER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    batch_fixed_linger: bool,

    /// Readings that may wait for a batch; beyond that new readings get 5.03 at once.
    #[arg(long, env = "QUEUE_CAPACITY", default_value_t = 50_000)]
    queue_capacity: usize,

    /// Max-Age of a 5.03 answer: when clients should send the reading again, in seconds.
    #[arg(long, env = "RETRY_AFTER_SECONDS", default_value_t = 5)]
    retry_after_seconds: u32,

    /// Place tag of readings that do not name one (`?place=`).
    #[arg(long, env = "DEFAULT_PLACE", default_value = "room1")]
    default_place: String,

    /// Exchanges remembered to recognise retransmissions (about 50 bytes each).
    #[arg(long, env = "DEDUP_CAPACITY", default_value_t = 100_000)]
    dedup_capacity: usize,

    /// HTTP address for /metrics, /healthz and /readyz.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9090")]
    http_addr: SocketAddr,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("cannot bind UDP {addr}: {source}")]
    BindUdp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    BindHttp(#[from] http::BindError),
    #[error("cannot build the InfluxDB client: {0}")]
    Client(#[from] iot_common::influx::HttpError),
}

fn main() -> std::process::ExitCode {
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
    let bind_error = |source| Error::BindUdp {
        addr: args.bind,
        source,
    };
    let socket = udp::bind(args.bind, UDP_BUFFERS).map_err(bind_error)?;
    let udp_addr = socket.local_addr().unwrap_or(args.bind);
    let datagrams = udp::Datagrams::new(socket).map_err(bind_error)?;
    let client = InfluxClient::new(&args.influx, &args.influx_db)?;

    let mut registry = Registry::default();
    let metrics = metrics::Metrics::new(&mut registry);
    let writer_metrics = WriterMetrics::new(&mut registry);
    let ready = Readiness::default();

    let shared = server::Shared::new(
        datagrams,
        dedup::DedupCache::new(args.dedup_capacity, dedup::EXCHANGE_LIFETIME),
        metrics,
        server::Settings {
            default_place: args.default_place.clone(),
            retry_after_secs: args.retry_after_seconds,
        },
        ready.clone(),
    );
    let writer = BatchWriter::spawn(
        client.clone(),
        BatchConfig {
            max_points: args.batch_size as usize,
            linger: Duration::from_millis(args.batch_linger_ms),
            fixed_linger: args.batch_fixed_linger,
            max_in_flight: args.batch_in_flight as usize,
            queue_capacity: args.queue_capacity,
            retry: RetryPolicy::interactive(),
        },
        writer_metrics,
        server::on_written(shared.clone()),
    );

    // Set once the queued readings are written, after the signal stopped the CoAP side.
    let stopped = Shutdown::new();
    let side_port = http::spawn(args.http_addr, registry, ready.clone(), stopped.wait()).await?;
    let watcher = tokio::spawn(watch_influx(
        client,
        args.create_database,
        ready,
        stopped.clone(),
    ));
    tracing::info!(
        coap = %udp_addr,
        http = %side_port.addr,
        influx = %args.influx.influx_url,
        database = %args.influx_db,
        "coap-server listening"
    );

    server::serve(shared, &writer, iot_common::shutdown::signal()).await;

    // Stop taking readings, then write and answer what is queued before exiting.
    tracing::info!("flushing queued readings");
    writer.close().await;
    stopped.trigger();
    let _ = watcher.await;
    side_port.join().await;
    tracing::info!("coap-server stopped");
    Ok(())
}

/// Large buffers: a burst of readings must not overflow the kernel's default receive buffer,
/// or the clients' retransmissions (seconds later) would throttle them.
const UDP_BUFFERS: udp::Buffers = udp::Buffers {
    recv: 8 << 20,
    send: 8 << 20,
};

/// Creates the database once InfluxDB answers (not on every write, as the reference server did)
/// and keeps the readiness flag current with a ping every few seconds.
async fn watch_influx(
    client: InfluxClient,
    mut create_database: bool,
    ready: Readiness,
    stop: Shutdown,
) {
    let mut attempt = 0;
    loop {
        let up = client.ping().await;
        if up && create_database {
            match client.create_database().await {
                Ok(()) => {
                    tracing::info!(database = client.database(), "database ready");
                    create_database = false;
                }
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(error = %e, "cannot create the database; assuming it exists");
                    create_database = false;
                }
                Err(e) => tracing::warn!(error = %e, "cannot create the database yet"),
            }
        }
        if up != ready.get() {
            if up {
                tracing::info!(url = client.url(), "InfluxDB answers");
            } else {
                tracing::warn!(url = client.url(), "InfluxDB does not answer");
            }
        }
        ready.set(up && !create_database);
        attempt = if up { 0 } else { attempt + 1 };
        let pause = if up || attempt > 5 {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(200 << attempt)
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            () = stop.wait() => return,
        }
    }
}
