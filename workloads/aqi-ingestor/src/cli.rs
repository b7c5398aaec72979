//! Command-line flags, each with an environment-variable fallback (the operator sets those).

use std::net::SocketAddr;

use clap::Parser;
use iot_common::InfluxArgs;
use iot_common::logging::LogArgs;

use crate::fetch::Source;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "aqi-ingestor",
    version,
    about = "Polls Sensor.Community snapshots, computes the UK Daily Air Quality Index and writes new readings to InfluxDB",
    long_about = "Polls Sensor.Community snapshots, computes the UK Daily Air Quality Index (DAQI) of \
PM10 (P1) and PM2.5 (P2) and writes every reading that is new to InfluxDB 1.x, as measurement \
`air_quality` with tags sensor_id, location_id, country, sensor_type and one field per value \
type, plus aqi_pm10, aqi_pm25, aqi, latitude and longitude.\n\n\
A reading is new when it is later than the newest reading of its sensor stored before the poll \
(read back from InfluxDB at start-up), so restarts and repeated snapshots write nothing twice. \
Polls are conditional (ETag / If-Modified-Since) and gzip-compressed: an unchanged snapshot is \
neither downloaded nor processed.\n\n\
Offline:  aqi-ingestor --source snapshot.json --dry-run   prints the line protocol it would \
write, one line per reading, and exits; it needs no InfluxDB.",
    after_help = "Every flag can also be set by the environment variable shown in brackets."
)]
pub struct Cli {
    #[command(flatten)]
    pub influx: InfluxArgs,

    /// InfluxDB database the readings go to.
    #[arg(long, env = "INFLUX_DB", default_value = "aqi")]
    pub influx_db: String,

    /// Create the database at start-up (turn off when the InfluxDB user may not create one).
    #[arg(long, env = "CREATE_DATABASE", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_database: bool,

    /// Where snapshots come from: `24h` (24-hour means, what DAQI is defined on), `5min` (the
    /// 5-minute means), any http(s) URL, or a file path (offline use).
    #[arg(long, env = "AQI_SOURCE", default_value = "24h")]
    pub source: Source,

    /// Seconds between polls. Sensor.Community regenerates its files every few minutes and asks
    /// clients to poll every 5 minutes or slower: polling faster only downloads the same file
    /// again (the seed's 10 s fetched a multi-megabyte file 30 times per change).
    #[arg(long, env = "AQI_POLL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub poll_seconds: u64,

    /// Timeout of one snapshot download, in seconds (connecting takes at most 10 of them).
    #[arg(long, env = "AQI_FETCH_TIMEOUT_SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub fetch_timeout_seconds: u64,

    /// Readings per InfluxDB write request (a request holds at least this many, except the last).
    #[arg(long, env = "AQI_BATCH_LINES", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_lines: u64,

    /// How far ahead of this machine's clock a reading's time may be, in seconds; later ones are
    /// skipped so that one wrong timestamp cannot hold back a sensor's real readings.
    #[arg(long, env = "AQI_MAX_CLOCK_SKEW_SECONDS", default_value_t = 3600)]
    pub max_clock_skew_seconds: u64,

    /// Threads that parse and transform a snapshot. 1 parses it in order; more parse windows
    /// of it side by side, which saves time only on snapshots of hundreds of thousands of
    /// records (docs/benchmarks.md). 0 means one per CPU this process may use (a container's
    /// CPU limit counts), at most 8.
    #[arg(long, env = "AQI_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub threads: u64,

    /// Print the line protocol that would be written to stdout instead of writing it; needs no
    /// InfluxDB (and starts with no watermarks). With a file source it polls once and exits, as
    /// `--once` does.
    #[arg(long, env = "AQI_DRY_RUN")]
    pub dry_run: bool,

    /// Poll once and exit: status 0 when the poll succeeded, 1 otherwise. No HTTP side port.
    #[arg(long, env = "AQI_ONCE")]
    pub once: bool,

    /// HTTP address for /metrics, /healthz and /readyz (ready when InfluxDB answers).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// Whether to poll once and exit: `--once`, or a dry run of a file (offline use, where
    /// polling the same file again would only print nothing every few minutes).
    pub fn runs_once(&self) -> bool {
        self.once || (self.dry_run && matches!(self.source, Source::File(_)))
    }

    /// `--threads`, with 0 resolved.
    pub fn threads(&self) -> usize {
        match usize::try_from(self.threads) {
            Ok(0) | Err(_) => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(8),
            Ok(n) => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["aqi-ingestor"]).expect("defaults parse");
        assert_eq!(cli.influx_db, "aqi");
        assert_eq!(cli.poll_seconds, 300);
        assert_eq!(cli.source, Source::Url(crate::fetch::URL_24H.into()));
        assert_eq!(cli.http_addr.to_string(), "0.0.0.0:9090");
        assert!(cli.create_database);
        assert!(!cli.dry_run && !cli.once);
        assert_eq!(cli.threads(), 1, "parsing in order unless asked otherwise");
    }

    #[test]
    fn a_dry_run_of_a_file_runs_once_and_of_a_url_keeps_polling() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("aqi-ingestor").chain(args.iter().copied()))
                .expect("parses")
        };
        assert!(parse(&["--dry-run", "--source", "snapshot.json"]).runs_once());
        assert!(!parse(&["--dry-run", "--source", "24h"]).runs_once());
        assert!(!parse(&["--source", "snapshot.json"]).runs_once());
        assert!(parse(&["--once"]).runs_once());
    }

    #[test]
    fn polling_faster_than_once_a_second_is_refused() {
        assert!(Cli::try_parse_from(["aqi-ingestor", "--poll-seconds", "0"]).is_err());
        let cli =
            Cli::try_parse_from(["aqi-ingestor", "--create-database", "false"]).expect("parses");
        assert!(!cli.create_database);
    }
}
