//! Command-line flags, each with an environment-variable fallback (the operator sets those).

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use clap::{Args, Parser};
use iot_common::InfluxArgs;
use iot_common::logging::LogArgs;

use crate::fetch::Source;
use crate::region::Region;

/// Sensor.Community's data API.
pub(crate) const API_URL: &str = "https://data.sensor.community";

/// A source as named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SourceArg {
    /// Sensor.Community's 24-hour file, `data.24h.json`.
    Daily24h,
    /// Sensor.Community's 5-minute data: `data.json`, or the filter API for a region.
    FiveMin,
    /// `--readings-source` only: `5min` when `--source` is `24h` or `5min`, else none.
    Auto,
    None,
    Custom(Source),
}

impl FromStr for SourceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "24h" => SourceArg::Daily24h,
            "5min" => SourceArg::FiveMin,
            "auto" => SourceArg::Auto,
            "none" => SourceArg::None,
            other => SourceArg::Custom(other.parse()?),
        })
    }
}

/// At most one form of region.
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub(crate) struct RegionArgs {
    /// Only sensors in these countries: comma-separated codes as the feed writes them, such as
    /// GB,IE.
    #[arg(long, env = "AQI_REGION_COUNTRIES", value_parser = Region::countries)]
    pub(crate) region_countries: Option<Region>,

    /// Only sensors in this box: SOUTH,WEST,NORTH,EAST in degrees, such as 49.9,-8.2,60.9,1.8.
    #[arg(long, env = "AQI_REGION_BOX", value_parser = Region::bounding_box, allow_hyphen_values = true)]
    pub(crate) region_box: Option<Region>,

    /// Only sensors within a radius of a centre: LATITUDE,LONGITUDE,KM, such as 51.5,-0.12,50.
    #[arg(long, env = "AQI_REGION_AREA", value_parser = Region::area, allow_hyphen_values = true)]
    pub(crate) region_area: Option<Region>,
}

impl RegionArgs {
    pub(crate) fn region(&self) -> Option<Region> {
        self.region_countries
            .clone()
            .or_else(|| self.region_box.clone())
            .or_else(|| self.region_area.clone())
    }
}

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
/// The command line, each flag with an environment fallback.
pub struct Cli {
    #[command(flatten)]
    pub(crate) influx: InfluxArgs,

    /// InfluxDB database the readings go to.
    #[arg(long, env = "INFLUX_DB", default_value = "aqi")]
    pub(crate) influx_db: String,

    /// Create the database at start-up (turn off when the InfluxDB user may not create one).
    #[arg(long, env = "CREATE_DATABASE", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) create_database: bool,

    /// Where 24-hour means come from (what DAQI is defined on): `24h` (Sensor.Community's
    /// data.24h.json), any http(s) URL or a file path of the same format; or `5min` (none: the
    /// index is computed from 5-minute readings only).
    #[arg(long, env = "AQI_SOURCE", default_value = "24h")]
    pub(crate) source: SourceArg,

    /// 5-minute readings, stored and turned into our own 24-hour means when the 24-hour source
    /// is empty, failing or stale (or absent): `5min` (Sensor.Community's data.json, or its
    /// filter API for the region), any http(s) URL or file path, `none`, or `auto` (`5min` when
    /// --source is 24h or 5min, none for a custom URL or file).
    #[arg(long, env = "AQI_READINGS_SOURCE", default_value = "auto")]
    pub(crate) readings_source: SourceArg,

    /// The 24-hour source is stale (and computed means are written instead) when its newest
    /// record is older than this many seconds.
    #[arg(long, env = "AQI_MAX_UPSTREAM_AGE_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_upstream_age_seconds: u64,

    /// Base URL of Sensor.Community's API, for `24h` and `5min`.
    #[arg(long, env = "AQI_API_URL", default_value = API_URL)]
    pub(crate) api_url: String,

    #[command(flatten)]
    pub(crate) region: RegionArgs,

    /// Seconds between polls. Sensor.Community regenerates its files every few minutes and asks
    /// clients to poll every 5 minutes or slower: polling faster only downloads the same file
    /// again (the seed's 10 s fetched a multi-megabyte file 30 times per change).
    #[arg(long, env = "AQI_POLL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) poll_seconds: u64,

    /// Timeout of one snapshot download, in seconds (connecting takes at most 10 of them).
    #[arg(long, env = "AQI_FETCH_TIMEOUT_SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) fetch_timeout_seconds: u64,

    /// Readings per InfluxDB write request (a request holds at least this many, except the last).
    #[arg(long, env = "AQI_BATCH_LINES", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) batch_lines: u64,

    /// How far ahead of this machine's clock a reading's time may be, in seconds; later ones are
    /// skipped so that one wrong timestamp cannot hold back a sensor's real readings.
    #[arg(long, env = "AQI_MAX_CLOCK_SKEW_SECONDS", default_value_t = 3600)]
    pub(crate) max_clock_skew_seconds: u64,

    /// Threads that parse and transform a snapshot. 1 parses it in order; more parse windows
    /// of it side by side (the result is the same). 0, the default, means one per CPU this
    /// process may use (a container's CPU limit counts), at most 8: windows are small enough that
    /// a second thread costs no more memory than it saves time (docs/benchmarks.md).
    #[arg(long, env = "AQI_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=64))]
    pub(crate) threads: u64,

    /// Print the line protocol that would be written to stdout instead of writing it; needs no
    /// InfluxDB (and starts with no watermarks). With a file source it polls once and exits, as
    /// `--once` does.
    #[arg(long, env = "AQI_DRY_RUN")]
    pub(crate) dry_run: bool,

    /// Poll once and exit: status 0 when the poll succeeded, 1 otherwise. No HTTP side port.
    #[arg(long, env = "AQI_ONCE")]
    pub(crate) once: bool,

    /// HTTP address for /metrics, /healthz and /readyz (ready when InfluxDB answers).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub(crate) http_addr: SocketAddr,

    /// Log format and colours.
    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// Whether to poll once and exit: `--once`, or a dry run of a file (offline use, where
    /// polling the same file again would only print nothing every few minutes).
    pub(crate) fn runs_once(&self) -> bool {
        let files_only = || {
            let sources = [self.daily_source(), self.readings_source()];
            sources
                .iter()
                .all(|s| matches!(s, Ok(None | Some(Source::File(_)))))
        };
        self.once || (self.dry_run && files_only())
    }

    /// The 24-hour means source, if any.
    pub(crate) fn daily_source(&self) -> Result<Option<Source>, String> {
        match &self.source {
            SourceArg::Daily24h => Ok(Some(Source::Url(format!(
                "{}/static/v2/data.24h.json",
                self.api_base()
            )))),
            SourceArg::FiveMin | SourceArg::None => Ok(None),
            SourceArg::Custom(s) => Ok(Some(s.clone())),
            SourceArg::Auto => Err("--source auto: give 24h, 5min, a URL or a file".into()),
        }
    }

    /// The 5-minute readings source, if any.
    pub(crate) fn readings_source(&self) -> Result<Option<Source>, String> {
        let five_min = || {
            let base = self.api_base();
            Source::Url(match self.region.region() {
                Some(r) => format!("{base}/airrohr/v1/filter/{}", r.filter_query()),
                None => format!("{base}/static/v2/data.json"),
            })
        };
        match &self.readings_source {
            SourceArg::Auto => {
                Ok(matches!(self.source, SourceArg::Daily24h | SourceArg::FiveMin).then(five_min))
            }
            SourceArg::FiveMin => Ok(Some(five_min())),
            SourceArg::None => Ok(None),
            SourceArg::Custom(s) => Ok(Some(s.clone())),
            SourceArg::Daily24h => {
                Err("--readings-source 24h: the 24-hour file holds no 5-minute readings".into())
            }
        }
    }

    pub(crate) fn region(&self) -> Option<Arc<Region>> {
        self.region.region().map(Arc::new)
    }

    fn api_base(&self) -> &str {
        self.api_url.trim_end_matches('/')
    }

    /// `--threads`, with 0 resolved.
    pub(crate) fn threads(&self) -> usize {
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
        assert_eq!(
            cli.daily_source(),
            Ok(Some(Source::Url(crate::fetch::URL_24H.into())))
        );
        assert_eq!(
            cli.readings_source(),
            Ok(Some(Source::Url(crate::fetch::URL_5MIN.into())))
        );
        assert_eq!(cli.max_upstream_age_seconds, 3600);
        assert_eq!(cli.http_addr.to_string(), "0.0.0.0:9090");
        assert!(cli.create_database);
        assert!(!cli.dry_run && !cli.once);
        assert_eq!(cli.region(), None);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            cli.threads(),
            cpus.min(8),
            "one parsing thread per usable CPU"
        );
    }

    fn sources(args: &[&str]) -> (Option<Source>, Option<Source>) {
        let cli = Cli::try_parse_from(std::iter::once("aqi-ingestor").chain(args.iter().copied()))
            .expect("parses");
        (
            cli.daily_source().expect("daily"),
            cli.readings_source().expect("readings"),
        )
    }

    #[test]
    fn a_custom_source_polls_no_5_minute_data_unless_asked() {
        let file = || Some(Source::File("/tmp/a.json".into()));
        assert_eq!(sources(&["--source", "/tmp/a.json"]), (file(), None));
        assert_eq!(
            sources(&["--source", "none", "--readings-source", "/tmp/a.json"]),
            (None, file())
        );
        let url = |path: &str| Some(Source::Url(format!("http://127.0.0.1:9/{path}")));
        assert_eq!(
            sources(&["--source", "5min", "--api-url", "http://127.0.0.1:9/"]),
            (None, url("static/v2/data.json"))
        );
        assert_eq!(
            sources(&[
                "--readings-source",
                "none",
                "--api-url",
                "http://127.0.0.1:9"
            ]),
            (url("static/v2/data.24h.json"), None)
        );
    }

    #[test]
    fn a_region_selects_the_filter_api_for_5_minute_data() {
        let base = ["--api-url", "http://127.0.0.1:9"];
        let url = |q: &str| {
            Some(Source::Url(format!(
                "http://127.0.0.1:9/airrohr/v1/filter/{q}"
            )))
        };
        for (args, query) in [
            (vec!["--region-countries", "gb,IE"], "country=GB,IE"),
            (
                vec!["--region-box", "49.9,-8.2,60.9,1.8"],
                "box=49.9,-8.2,60.9,1.8",
            ),
            (vec!["--region-area", "-33.9,18.4,25"], "area=-33.9,18.4,25"),
        ] {
            let (_, readings) = sources(&[&base[..], &args[..]].concat());
            assert_eq!(readings, url(query), "{args:?}");
        }
        let two = Cli::try_parse_from([
            "aqi-ingestor",
            "--region-countries",
            "GB",
            "--region-area",
            "51,0,5",
        ]);
        assert!(two.is_err(), "one form of region at a time");
        let bad = Cli::try_parse_from(["aqi-ingestor", "--region-box", "60,0,50,1"]);
        assert!(bad.is_err());
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
        let five_min_file = [
            "--dry-run",
            "--source",
            "none",
            "--readings-source",
            "a.json",
        ];
        assert!(parse(&five_min_file).runs_once());
        let with_api = [
            "--dry-run",
            "--source",
            "a.json",
            "--readings-source",
            "5min",
        ];
        assert!(!parse(&with_api).runs_once());
    }

    #[test]
    fn polling_faster_than_once_a_second_is_refused() {
        assert!(Cli::try_parse_from(["aqi-ingestor", "--poll-seconds", "0"]).is_err());
        let cli =
            Cli::try_parse_from(["aqi-ingestor", "--create-database", "false"]).expect("parses");
        assert!(!cli.create_database);
    }
}
