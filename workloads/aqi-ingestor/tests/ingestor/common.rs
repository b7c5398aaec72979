//! The aqi-ingestor binary under test (one poll, or as a service), the sample files, snapshot
//! files, the library's poller and InfluxDB read-backs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iot_testkit::influx::InfluxServer;
use iot_testkit::process::Service;
use iot_testkit::wait::{self, default_timeout};
use serde_json::Value;

use crate::upstream::snapshot;

pub const DB: &str = "aqi";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Every real sample file, with its number of records.
pub const FIXTURES: &[(&str, u64)] = &[
    ("basecamp_ml_luftdaten_v1_data_2019-04-16.jsonfrag", 243),
    ("basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json", 243),
    ("luftdatenpumpe_doc_models_ldi_reading-ingress.json", 1),
    ("luftdatenpumpe_doc_models_ldi_upstream.json", 5),
    (
        "openhab_sensorcommunity_condition-result-plus-pressure.json",
        2,
    ),
    ("openhab_sensorcommunity_noise-result.json", 2),
    ("openhab_sensorcommunity_radiation-result.json", 2),
    ("toto_homebridge-airrohr_api_data.json", 2),
    (
        "toto_homebridge-airrohr_api_data_air_quality_sds011.json",
        2,
    ),
    ("toto_homebridge-airrohr_api_data_temp_bme280.json", 1),
    ("toto_homebridge-airrohr_api_data_temp_dht22.json", 2),
];

/// The path of a sample file, as a `--source`.
pub fn fixture_source(name: &str) -> String {
    fixture(name).to_string_lossy().into_owned()
}

/// The binary, with none of the variables that would change its defaults.
pub fn ingestor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aqi-ingestor"));
    c.env("RUST_LOG", "info")
        .env_remove("AQI_SOURCE")
        .env_remove("INFLUX_URL")
        .env_remove("INFLUX_DB")
        .stdin(std::process::Stdio::null());
    c
}

/// The result of a run that ends by itself (`--once`, or a dry run of a file).
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The fields of the "poll done" / "poll failed" log event.
    pub report: Value,
}

impl Run {
    /// Runs `command` to its end (blocking; fine for a process that ends by itself).
    pub fn of(command: &mut Command) -> Run {
        let out = command.output().expect("run aqi-ingestor");
        let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
        let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
        let report = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| matches!(v["message"].as_str(), Some("poll done" | "poll failed")))
            .unwrap_or(Value::Null);
        Run {
            success: out.status.success(),
            stdout,
            stderr,
            report,
        }
    }

    pub fn u64(&self, field: &str) -> u64 {
        self.report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {}\n{}", self.report, self.stderr))
    }

    pub fn outcome(&self) -> &str {
        self.report["outcome"].as_str().unwrap_or("")
    }
}

/// Runs one poll (`--once`, JSON log) with `args`.
pub fn run_once(args: &[&str]) -> Run {
    Run::of(
        ingestor()
            .args(["--once", "--log-format", "json"])
            .args(args),
    )
}

/// One poll of `source` into InfluxDB at `url`, which must succeed.
pub fn ingest_once(url: &str, source: &str) -> Run {
    let run = run_once(&["--influx-url", url, "--influx-db", DB, "--source", source]);
    assert!(run.success, "aqi-ingestor failed:\n{}", run.stderr);
    run
}

/// aqi-ingestor as a service polling `source` every second into InfluxDB at `influx_url`,
/// once its side port answers `/healthz`.
pub async fn service(influx_url: &str, source: &str, extra: &[&str]) -> Service {
    Service::start("aqi-ingestor", "/healthz", |http| {
        let mut c = ingestor();
        c.args(["--influx-url", influx_url, "--influx-db", DB])
            .args(["--source", source, "--poll-seconds", "1"])
            .args(["--http-addr", &http.to_string()])
            .args(extra);
        c
    })
    .await
}

/// A snapshot file in a directory of its own, removed when dropped.
pub struct SnapshotFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SnapshotFile {
    /// A file holding `records` as a snapshot.
    pub fn new(records: &[String]) -> Self {
        Self::with_body(&snapshot(records))
    }

    /// A file holding `body` exactly.
    pub fn with_body(body: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snapshot.json");
        std::fs::write(&path, body).expect("write the snapshot");
        SnapshotFile { _dir: dir, path }
    }

    /// Replaces the file's records.
    pub fn write(&self, records: &[String]) {
        std::fs::write(&self.path, snapshot(records)).expect("write the snapshot");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a `--source`.
    pub fn source(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// Rows of `q` as (time, value) pairs of the first two columns.
pub async fn pairs(influx: &InfluxServer, q: &str) -> Vec<(i64, Value)> {
    influx
        .rows(DB, q)
        .await
        .into_iter()
        .map(|r| (r[0].as_i64().unwrap_or(0), r[1].clone()))
        .collect()
}

/// Waits until InfluxDB holds exactly `want` points of `air_quality` with `field`, failing at
/// once when it holds more.
pub async fn wait_count(influx: &InfluxServer, field: &str, want: u64) {
    // The ingestor creates it too; counting must not race that (a query of a missing database
    // fails).
    influx.query(DB, &format!("CREATE DATABASE {DB}")).await;
    let what = format!("count({field}) to reach {want}");
    wait::until(&what, default_timeout(), || async move {
        let n = influx.count(DB, "air_quality", field).await;
        assert!(n <= want, "count({field}) is {n}, more than {want}");
        if n == want {
            Ok(())
        } else {
            Err(format!("count({field}) = {n}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The library's poller, writing to InfluxDB at `influx_url` (database created).
pub async fn poller(
    influx_url: &str,
    source: aqi_ingestor::fetch::Source,
) -> aqi_ingestor::poll::Poller {
    let args = iot_common::InfluxArgs {
        influx_url: influx_url.to_string(),
        influx_username: String::new(),
        influx_password: String::new(),
        influx_timeout_ms: 5000,
    };
    let client = iot_common::InfluxClient::new(&args, DB).expect("client");
    client.create_database().await.expect("create database");
    aqi_ingestor::poll::Poller {
        fetcher: aqi_ingestor::fetch::Fetcher::new(source, Duration::from_secs(10))
            .expect("fetcher"),
        watermarks: aqi_ingestor::watermark::Watermarks::new(),
        sink: aqi_ingestor::sink::Sink::Influx {
            client,
            retry: iot_common::RetryPolicy::interactive(),
        },
        config: aqi_ingestor::poll::PollConfig::default(),
    }
}

/// Nanoseconds of a feed timestamp (UTC).
pub fn ns(time: &str) -> i64 {
    let secs = aqi_ingestor::timestamp::parse(time).expect("valid time");
    aqi_ingestor::timestamp::to_nanos(secs)
}
