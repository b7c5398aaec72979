//! Helpers of the aqi-ingestor integration tests: the binary (one poll, or as a daemon), record
//! and snapshot builders, and a tiny HTTP server that serves snapshots the way
//! Sensor.Community does (ETag, Last-Modified, 304, gzip) and logs every request.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use iot_testkit::influx::free_port;
use serde_json::Value;

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

pub fn ingestor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aqi-ingestor"));
    c.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("AQI_SOURCE")
        .env_remove("INFLUX_URL")
        .env_remove("INFLUX_DB")
        .stdin(Stdio::null());
    c
}

/// The result of `aqi-ingestor --once`.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The fields of the "poll done" / "poll failed" log event.
    pub report: Value,
}

impl Run {
    pub fn u64(&self, field: &str) -> u64 {
        self.report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {}\n{}", self.report, self.stderr))
    }

    pub fn outcome(&self) -> &str {
        self.report["outcome"].as_str().unwrap_or("")
    }
}

/// Runs one poll of `source` (blocking; fine for a process that ends by itself).
pub fn run_once(args: &[&str]) -> Run {
    let out = ingestor()
        .args(["--once", "--log-format", "json"])
        .args(args)
        .output()
        .expect("run aqi-ingestor");
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

/// One poll of `source` into InfluxDB at `url`.
pub fn ingest_once(url: &str, source: &str) -> Run {
    let run = run_once(&["--influx-url", url, "--influx-db", DB, "--source", source]);
    assert!(run.success, "aqi-ingestor failed:\n{}", run.stderr);
    run
}

/// aqi-ingestor running as a service, killed when dropped.
pub struct Daemon {
    child: Child,
    pub http: SocketAddr,
}

impl Daemon {
    pub fn start(influx_url: &str, source: &str, extra: &[&str]) -> Self {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = ingestor()
            .args(["--influx-url", influx_url, "--influx-db", DB])
            .args(["--source", source, "--poll-seconds", "1"])
            .args(["--http-addr", &http.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn aqi-ingestor");
        Daemon { child, http }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit code, once it has exited.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    pub async fn status(&self, path: &str) -> Option<u16> {
        reqwest::get(format!("http://{}{path}", self.http))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.http)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of one sample line of /metrics (`name{labels}` exactly as exposed).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until `sample` reaches at least `at_least`.
    pub async fn wait_metric(&self, sample: &str, at_least: f64, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(sample).await.unwrap_or(f64::NAN);
            if v >= at_least {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{sample} did not reach {at_least} (is {v}):\n{}",
                self.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record in the current v2 format, as the API sends it (numbers as strings).
pub fn record(sensor: u64, time: &str, values: &[(&str, &str)]) -> String {
    let values: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            format!(
                r#"{{"id":{},"value":"{v}","value_type":"{t}"}}"#,
                sensor * 100 + i as u64
            )
        })
        .collect();
    format!(
        r#"{{"id":{sensor}0,"sampling_rate":null,"timestamp":"{time}","location":{{"id":{loc},"latitude":"51.500","longitude":"-0.120","altitude":"11.0","country":"GB","exact_location":0,"indoor":0}},"sensor":{{"id":{sensor},"pin":"1","sensor_type":{{"id":14,"name":"SDS011","manufacturer":"Nova Fitness"}}}},"sensordatavalues":[{}]}}"#,
        values.join(","),
        loc = sensor + 50_000,
    )
}

/// A PM record: `P1` (PM10) and `P2` (PM2.5).
pub fn pm(sensor: u64, time: &str, p1: &str, p2: &str) -> String {
    record(sensor, time, &[("P1", p1), ("P2", p2)])
}

pub fn snapshot(records: &[String]) -> String {
    format!("[{}]", records.join(",\n"))
}

/// A deterministic synthetic snapshot of `n` records (PM and weather sensors, some repeats,
/// a little junk), several windows long for large `n`.
pub fn synthetic(n: u64) -> String {
    let mut records = Vec::with_capacity(n as usize);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..n {
        let r = next();
        let sensor = if r % 10 == 0 {
            1000 + r % (i + 1)
        } else {
            1000 + i
        };
        let time = format!("2024-01-15 10:{:02}:{:02}", (r >> 8) % 60, (r >> 16) % 60);
        let v = |k: u64| format!("{}.{:02}", (r >> k) % 120, (r >> (k + 8)) % 100);
        let rec = match r % 7 {
            0 => record(
                sensor,
                &time,
                &[("temperature", "-3.10"), ("humidity", &v(24))],
            ),
            1 => record(sensor, &time, &[("P1", "1999.90"), ("P2", &v(24))]),
            2 => record(sensor, &time, &[("P1", "nan"), ("P2", "")]),
            _ => pm(sensor, &time, &v(24), &v(40)),
        };
        records.push(rec);
    }
    snapshot(&records)
}

/// How the snapshot server answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            body: body.into(),
            etag: None,
            last_modified: None,
        }
    }

    pub fn etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_string());
        self
    }

    pub fn last_modified(mut self, lm: &str) -> Self {
        self.last_modified = Some(lm.to_string());
        self
    }

    pub fn status(status: u16) -> Self {
        Reply {
            status,
            body: b"upstream trouble".to_vec(),
            etag: None,
            last_modified: None,
        }
    }
}

#[derive(Debug, Default)]
struct Script {
    /// Served in turn; the last one again and again.
    replies: Vec<Reply>,
    next: usize,
    /// Answer 304 to a matching If-None-Match / If-Modified-Since.
    honour_conditions: bool,
    /// Compress when the client accepts gzip.
    gzip: bool,
    requests: Vec<HeaderMap>,
    bytes_sent: usize,
}

/// A local HTTP server playing the Sensor.Community API.
pub struct SnapshotServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl SnapshotServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Mutex::new(Script {
            replies,
            honour_conditions: true,
            gzip: true,
            ..Script::default()
        }));
        let app = axum::Router::new()
            .route("/static/v2/data.24h.json", axum::routing::get(serve))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the snapshot server");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SnapshotServer { addr, script, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/static/v2/data.24h.json", self.addr)
    }

    pub fn set(&self, replies: Vec<Reply>) {
        let mut s = self.script.lock().expect("script");
        s.replies = replies;
        s.next = 0;
    }

    pub fn honour_conditions(&self, yes: bool) {
        self.script.lock().expect("script").honour_conditions = yes;
    }

    pub fn gzip(&self, yes: bool) {
        self.script.lock().expect("script").gzip = yes;
    }

    /// The headers of every request so far.
    pub fn requests(&self) -> Vec<HeaderMap> {
        self.script.lock().expect("script").requests.clone()
    }

    /// Body bytes sent so far (as on the wire).
    pub fn bytes_sent(&self) -> usize {
        self.script.lock().expect("script").bytes_sent
    }
}

impl Drop for SnapshotServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn serve(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap) -> Response {
    let mut s = script.lock().expect("script");
    s.requests.push(headers.clone());
    let i = s.next.min(s.replies.len().saturating_sub(1));
    s.next += 1;
    let Some(reply) = s.replies.get(i).cloned() else {
        return respond(StatusCode::NOT_FOUND, Vec::new());
    };
    let mut builder = Response::builder();
    if let Some(etag) = &reply.etag {
        builder = builder.header(header::ETAG, etag);
    }
    if let Some(lm) = &reply.last_modified {
        builder = builder.header(header::LAST_MODIFIED, lm);
    }
    let inm = header(&headers, "if-none-match");
    let ims = header(&headers, "if-modified-since");
    let unchanged = match (inm, &reply.etag, ims, &reply.last_modified) {
        (Some(a), Some(b), _, _) => a == b,
        (None, _, Some(a), Some(b)) => a == b,
        _ => false,
    };
    if s.honour_conditions && reply.status == 200 && unchanged {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("response");
    }
    let accepts_gzip = header(&headers, "accept-encoding").is_some_and(|v| v.contains("gzip"));
    let body = if s.gzip && accepts_gzip && reply.status == 200 {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&reply.body).expect("gzip");
        gz.finish().expect("gzip")
    } else {
        reply.body.clone()
    };
    s.bytes_sent += body.len();
    builder
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("response")
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .body(Body::from(body))
        .expect("response")
}

/// Rows of `q` as (time, value) pairs of the first two columns.
pub async fn pairs(influx: &iot_testkit::influx::InfluxServer, q: &str) -> Vec<(i64, Value)> {
    influx
        .rows(DB, q)
        .await
        .into_iter()
        .map(|r| (r[0].as_i64().unwrap_or(0), r[1].clone()))
        .collect()
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
