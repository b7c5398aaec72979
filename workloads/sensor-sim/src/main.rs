//! sensor-sim: simulated DHT temperature/humidity sensors that report to coap-server over CoAP,
//! and the load generator for the CoAP ingest path.

mod client;
mod deliver;
mod load;
mod model;
mod simulate;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use iot_common::Shutdown;
use iot_common::http::{self, Readiness};
use iot_common::logging::{self, LogArgs};
use iot_common::runtime::{self, Threads};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulated DHT sensors sending readings to coap-server over CoAP",
    long_about = "Simulated DHT temperature/humidity sensors sending readings to coap-server over CoAP.\n\n\
Without a subcommand it simulates --sensors sensors spread over --places, each sending a \
temperature and a humidity reading every --interval seconds, as confirmable POSTs to \
/sensors/dht/temperature and /sensors/dht/humidity. Each reading is retransmitted as RFC 7252 \
says until the server acknowledges it; a 5.03 answer is honoured by waiting its Max-Age.\n\n\
With --keys-dir the sensors speak CoAP over DTLS 1.2 with pre-shared keys (RFC 7252 §9, \
coaps://, the server's port 5684): sensor sim-<i> is the device of that name, its key the \
file of that name in the directory, read again at every handshake (a rotated key is used \
from the next one). The readings then carry no place= or sensor=: the server knows the \
device's.\n\n\
`sensor-sim load` is the load generator: see `sensor-sim load --help`.",
    after_help = "Every flag can also be set by the environment variable shown in brackets.\n\n\
Examples:\n  sensor-sim --server 127.0.0.1:5683 --sensors 4 --places kitchen,lab --interval 5\n  \
sensor-sim --server 127.0.0.1:5684 --keys-dir /etc/sensor-keys --sensors 4\n  \
sensor-sim load --server 127.0.0.1:5683 --count 100000 --sockets 8 --window 32\n  \
sensor-sim load --server 127.0.0.1:5683 --duration 10 --sockets 1 --window 64\n  \
sensor-sim load --server 127.0.0.1:5684 --keys-dir /etc/sensor-keys --sockets 4 --count 10000\n  \
sensor-sim load --server 127.0.0.1:5684 --keys-dir /etc/sensor-keys --devices 32 --interval 1 --duration 60"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,

    /// coap-server address (host:port).
    #[arg(
        long,
        env = "COAP_SERVER",
        default_value = "127.0.0.1:5683",
        global = true
    )]
    server: String,

    #[command(flatten)]
    simulate: SimulateArgs,

    #[command(flatten)]
    transmission: TransmissionArgs,

    /// HTTP address for /metrics, /healthz and /readyz (ready once a reading was stored).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9090", global = true)]
    http_addr: SocketAddr,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Send readings as fast as the server takes them (or at --rate, or as a fleet of devices
    /// each on its own --interval) and report throughput and acknowledgement latency. Exits 2
    /// when any reading was not stored.
    #[command(after_help = LOAD_HELP)]
    Load(LoadArgs),
}

#[derive(ClapArgs, Debug)]
struct SimulateArgs {
    /// Number of simulated sensors.
    #[arg(long, env = "SIM_SENSORS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sensors: u32,

    /// Places the sensors are spread over (comma-separated; becomes the `place` tag).
    #[arg(
        long,
        env = "SIM_PLACES",
        default_value = "room1",
        value_delimiter = ','
    )]
    places: Vec<String>,

    /// Seconds between two readings of one sensor.
    #[arg(long = "interval", env = "SIM_INTERVAL_SECONDS", default_value_t = 5.0)]
    interval_seconds: f64,

    /// Readings rounds per sensor before exiting (0: run until stopped).
    #[arg(long, env = "SIM_ROUNDS", default_value_t = 0)]
    rounds: u64,

    /// Seed of the simulated values (the same seed gives the same readings).
    #[arg(long, env = "SIM_SEED", default_value_t = 1)]
    seed: u64,

    /// Speak DTLS with pre-shared keys: sensor sim-<i> uses identity sim-<i> and the key in
    /// the file DIR/sim-<i> (a mounted Secret), read at every handshake. A sensor whose file is
    /// missing waits for it; the others go on. --server then points at port 5684.
    #[arg(long, env = "SIM_KEYS_DIR", value_name = "DIR")]
    keys_dir: Option<PathBuf>,
}

const LOAD_HELP: &str = "\
Two shapes of load:
  a few sockets, each with a window of requests in flight (a gateway, a benchmark):
    sensor-sim load --server 127.0.0.1:5683 --sockets 8 --window 32 --count 100000
  a fleet of devices, each with its own socket (and identity over DTLS) and schedule:
    sensor-sim load --server 127.0.0.1:5684 --keys-dir /etc/sensor-keys --devices 32 \\
      --interval 1 --duration 60
  Device j of N sends one reading every --interval seconds, the first at j/N of an interval,
  one at a time; one that falls behind sends its next as soon as its last is answered.
  Add --new-port-per-reading for a new source port (over DTLS, a new handshake) per reading,
  as NAT rebinding does to sensors on the internet: each reading is a new UDP flow, which a
  load balancer such as kube-proxy may send to another server.

Over DTLS (coaps://, the server's port 5684) each socket is a device:
  sensor-sim load --server 127.0.0.1:5684 --keys-dir /etc/sensor-keys --sockets 4 --count 10000
  SIM_KEY=$(cat key) sensor-sim load --server 127.0.0.1:5684 --identity sim-1 --count 100
The summary then says how many DTLS handshakes were done and how many failed, and how many
source ports were used.";

#[derive(ClapArgs, Debug)]
struct LoadArgs {
    /// Readings to send in all (the run ends when all are stored or given up).
    #[arg(long)]
    count: Option<u64>,

    /// Stop sending new readings after this many seconds.
    #[arg(long)]
    duration: Option<f64>,

    /// Target readings per second over all sockets (default: as fast as the window allows).
    #[arg(long, conflicts_with = "interval")]
    rate: Option<f64>,

    /// UDP sockets (client endpoints) to send from; each is one peer to the server.
    #[arg(long, visible_alias = "connections", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    sockets: u32,

    /// Confirmable requests outstanding per socket, held constant: each answer sends the next
    /// reading at once (unless --rate paces them). `--sockets 1 --window 1` is one sequential
    /// sensor; `--sockets 1 --window 1024` a gateway with 1024 readings in flight. Default 32;
    /// 1 with --devices, --interval or --new-port-per-reading.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    window: Option<u32>,

    /// A fleet of N devices: N sockets, each one device sending one reading at a time (over
    /// DTLS, the first N key files of --keys-dir). Instead of --sockets and --window.
    #[arg(long, value_name = "N", conflicts_with_all = ["sockets", "window"], value_parser = clap::value_parser!(u32).range(1..=10_000))]
    devices: Option<u32>,

    /// Seconds between two readings of one device (socket), each device on its own schedule,
    /// spread over the interval so that they do not send in lock-step. Instead of --rate: the
    /// total rate is devices / interval.
    #[arg(long, value_name = "SECONDS", conflicts_with = "window")]
    interval: Option<f64>,

    /// Every reading from a new source port: a new UDP socket (over DTLS, a new handshake,
    /// since DTLS 1.2 binds a session to the address), the old one closed once its exchange has
    /// ended. A reading sent again (after a 5.03, or no answer) takes a new one too. One reading
    /// at a time per socket (--window 1).
    #[arg(long, conflicts_with = "window")]
    new_port_per_reading: bool,

    /// Seconds a reading may still take after the sending phase before it counts as failed.
    #[arg(long, default_value_t = 60.0)]
    drain: f64,

    /// Place tag of the load readings.
    #[arg(long, default_value = "load")]
    place: String,

    /// Print the summary as JSON instead of text, and the progress lines (stderr, one a
    /// second and a last one with "done": true) as one JSON object per line.
    #[arg(long)]
    json: bool,

    /// Speak DTLS with pre-shared keys: socket j is the device whose identity is the j-th file
    /// name of DIR in sorted order (hidden entries left out), its key that file's content. DIR
    /// needs at least --sockets (--devices) files. Readings then carry no place= or sensor=.
    #[arg(
        long,
        env = "SIM_KEYS_DIR",
        value_name = "DIR",
        conflicts_with = "identity"
    )]
    keys_dir: Option<PathBuf>,

    /// Speak DTLS as this one identity on every socket, with --key.
    #[arg(long, env = "SIM_IDENTITY", requires = "key")]
    identity: Option<String>,

    /// The pre-shared key of --identity: a printable string of at least 16 bytes, whose bytes
    /// are the key (as libcoap's `coap-client -u NAME -k KEY` takes it).
    #[arg(long, env = "SIM_KEY", hide_env_values = true, requires = "identity")]
    key: Option<String>,
}

#[derive(ClapArgs, Debug)]
struct TransmissionArgs {
    /// RFC 7252 ACK_TIMEOUT in milliseconds.
    #[arg(
        long,
        env = "COAP_ACK_TIMEOUT_MS",
        default_value_t = 2000,
        global = true
    )]
    ack_timeout_ms: u64,

    /// RFC 7252 MAX_RETRANSMIT.
    #[arg(long, env = "COAP_MAX_RETRANSMIT", default_value_t = 4, global = true)]
    max_retransmit: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    // One thread: the simulator is all message passing between its tasks, which is cheapest
    // without cross-thread wake-ups, and it leaves the other cores to the server under test.
    runtime::run(Threads::One, run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let server = match resolve(&cli.server).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(server = %cli.server, error = %e, "cannot resolve the server address");
            return ExitCode::FAILURE;
        }
    };
    let params = client::Transmission {
        ack_timeout: Duration::from_millis(cli.transmission.ack_timeout_ms),
        max_retransmit: cli.transmission.max_retransmit,
        ..client::Transmission::default()
    };
    let stats = Arc::new(stats::Stats::default());
    let stop_rx = Shutdown::on_signal().receiver();

    match cli.mode {
        Some(Mode::Load(args)) => run_load(server, args, params, stats, stop_rx).await,
        None => run_simulation(server, cli.simulate, cli.http_addr, params, stats, stop_rx).await,
    }
}

async fn run_simulation(
    server: SocketAddr,
    args: SimulateArgs,
    http_addr: SocketAddr,
    params: client::Transmission,
    stats: Arc<stats::Stats>,
    stop: watch::Receiver<bool>,
) -> ExitCode {
    let places: Vec<String> = args
        .places
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if places.is_empty() || !(0.01..=86_400.0).contains(&args.interval_seconds) {
        tracing::error!("need at least one place and an interval between 0.01 and 86400 s");
        return ExitCode::FAILURE;
    }
    let mut registry = Registry::default();
    stats.register_in(&mut registry);
    let ready = Readiness::default();
    let mut http_stop = stop.clone();
    let http_stopped = async move {
        let _ = http_stop.wait_for(|s| *s).await;
    };
    if let Err(e) = http::spawn(http_addr, registry, ready.clone(), http_stopped).await {
        tracing::error!(error = %e, "cannot start the side port");
        return ExitCode::FAILURE;
    }
    let plan = simulate::Plan {
        server,
        sensors: args.sensors,
        places,
        interval: Duration::from_secs_f64(args.interval_seconds),
        rounds: args.rounds,
        seed: args.seed,
        keys_dir: args.keys_dir,
    };
    tracing::info!(%server, sensors = plan.sensors, places = ?plan.places, interval = ?plan.interval, dtls = plan.keys_dir.is_some(), "simulating DHT sensors");
    if let Err(e) = simulate::run(plan, params, stats.clone(), ready, stop).await {
        tracing::error!(error = %e, "cannot open a client socket");
        return ExitCode::FAILURE;
    }
    tracing::info!(
        acked = stats.acked.get(),
        failed = stats.failed.get(),
        retransmitted = stats.retransmitted.get(),
        "simulation ended"
    );
    ExitCode::SUCCESS
}

async fn run_load(
    server: SocketAddr,
    args: LoadArgs,
    params: client::Transmission,
    stats: Arc<stats::Stats>,
    stop: watch::Receiver<bool>,
) -> ExitCode {
    if args.count.is_none() && args.duration.is_none() {
        tracing::error!("a load run needs a bound: --count and/or --duration");
        return ExitCode::FAILURE;
    }
    let shape = match load::Shape::of(
        args.sockets,
        args.devices,
        args.window,
        args.rate,
        args.interval,
        args.new_port_per_reading,
    ) {
        Ok(shape) => shape,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let devices = match load::devices(args.keys_dir, args.identity, args.key, shape.sockets) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "no devices for the sockets");
            return ExitCode::FAILURE;
        }
    };
    let plan = load::LoadPlan {
        server,
        shape,
        count: args.count,
        duration: args.duration.map(Duration::from_secs_f64),
        drain: Duration::from_secs_f64(args.drain.max(0.0)),
        place: args.place,
        json: args.json,
        devices,
    };
    tracing::info!(%server, ?plan.count, ?plan.duration, ?plan.shape, dtls = plan.devices.is_some(), "load run");
    let summary = match load::run(plan, params, stats, stop).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a client socket");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(s) => println!("{s}"),
            Err(e) => tracing::error!(error = %e, "cannot encode the summary"),
        }
    } else {
        summary.print_human();
    }
    if summary.failed > 0 || summary.acked < summary.readings {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

async fn resolve(server: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(server)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn load(args: &[&str]) -> Result<LoadArgs, clap::Error> {
        let line = ["sensor-sim", "load"].iter().chain(args);
        match Cli::try_parse_from(line)?.mode {
            Some(Mode::Load(args)) => Ok(args),
            None => panic!("not the load mode"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_fleet_is_asked_for_with_devices_interval_and_new_ports() {
        let fleet = [
            "--devices",
            "32",
            "--interval",
            "1",
            "--new-port-per-reading",
            "--duration",
            "60",
        ];
        let args = load(&fleet).unwrap();
        assert_eq!(
            (args.devices, args.interval, args.new_port_per_reading),
            (Some(32), Some(1.0), true)
        );
        let old = load(&["--sockets", "4", "--window", "16", "--rate", "100"]).unwrap();
        assert_eq!(
            (old.sockets, old.window, old.rate),
            (4, Some(16), Some(100.0))
        );
    }

    #[test]
    fn fleet_flags_and_window_flags_do_not_mix() {
        let clashes: [&[&str]; 4] = [
            &["--devices", "4", "--sockets", "4"],
            &["--devices", "4", "--window", "2"],
            &["--interval", "1", "--rate", "5"],
            &["--new-port-per-reading", "--window", "2"],
        ];
        for clash in clashes {
            let err = load(clash).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{clash:?}"
            );
        }
    }
}
