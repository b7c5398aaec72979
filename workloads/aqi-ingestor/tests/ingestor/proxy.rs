//! The ingestor behind a proxy in front of a real InfluxDB that answers 413 to large writes and
//! 429 before it forwards: every point is stored after the splits and retries, none is counted
//! as rejected, and the watermarks advance only past what InfluxDB stored.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aqi_ingestor::fetch::Source;
use aqi_ingestor::poll::PollOutcome;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use iot_testkit::influx::InfluxServer;

use crate::common::{self, DB, SnapshotFile};
use crate::upstream::pm;

const TIME: &str = "2024-01-15 10:00:00";

/// How the proxy answers writes, and what it answered.
#[derive(Debug, Default)]
struct Rules {
    /// A write of more lines than this is answered 413, as InfluxDB answers a body above its
    /// `max-body-size`.
    max_lines: usize,
    /// Writes that fit are answered 429 this many times before one is forwarded.
    too_many: usize,
    /// The status and line count of each write, in order.
    writes: Vec<(u16, usize)>,
}

#[derive(Clone)]
struct Upstream {
    influx: String,
    http: reqwest::Client,
    rules: Arc<Mutex<Rules>>,
}

/// A local HTTP proxy in front of InfluxDB.
struct Proxy {
    addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(influx: &str, max_lines: usize, too_many: usize) -> Self {
        let rules = Arc::new(Mutex::new(Rules {
            max_lines,
            too_many,
            writes: Vec::new(),
        }));
        let upstream = Upstream {
            influx: influx.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            rules: rules.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(upstream);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { addr, rules, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn writes(&self) -> Vec<(u16, usize)> {
        self.rules.lock().expect("rules").writes.clone()
    }

    fn set(&self, max_lines: usize, too_many: usize) {
        let mut rules = self.rules.lock().expect("rules");
        rules.max_lines = max_lines;
        rules.too_many = too_many;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: u16, body: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("request body");
    if parts.uri.path() == "/write" {
        let lines = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        let refusal = {
            let mut rules = up.rules.lock().expect("rules");
            let refusal = if lines > rules.max_lines {
                Some((413, r#"{"error":"Request Entity Too Large"}"#))
            } else if rules.too_many > 0 {
                rules.too_many -= 1;
                Some((429, r#"{"error":"Too Many Requests"}"#))
            } else {
                None
            };
            rules
                .writes
                .push((refusal.map_or(204, |(status, _)| status), lines));
            refusal
        };
        if let Some((status, text)) = refusal {
            return answer(status, text);
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).expect("method");
    let resp = up
        .http
        .request(method, format!("{}{path}", up.influx))
        .body(body)
        .send()
        .await
        .expect("influxd answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("influxd's body");
    answer(status, &text)
}

fn records(sensors: std::ops::RangeInclusive<u64>) -> Vec<String> {
    sensors.map(|s| pm(s, TIME, "10", "5")).collect()
}

fn time() -> u32 {
    aqi_ingestor::timestamp::parse(TIME).expect("valid time")
}

#[tokio::test]
async fn behind_a_proxy_that_answers_413_then_429_then_204_everything_is_stored() {
    let influx = InfluxServer::start().await;
    let proxy = Proxy::start(&influx.url(), 8, 1).await;
    let file = SnapshotFile::new(&records(1..=40));
    let mut poller = common::poller(&proxy.url(), Source::File(file.path().to_owned())).await;

    let report = poller.poll().await;
    assert_eq!(report.outcome, PollOutcome::Written, "{:?}", report.error);
    assert_eq!((report.written, report.rejected), (40, 0));
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 40);
    for sensor in 1..=40 {
        assert_eq!(poller.watermarks.stored(sensor), Some(time()), "{sensor}");
    }
    // One batch of 40 lines, halved three times to fit; the first part that fits is answered
    // 429 and written again.
    let writes = proxy.writes();
    assert_eq!(writes.first(), Some(&(413, 40)), "{writes:?}");
    let count = |status: u16| writes.iter().filter(|w| w.0 == status).count();
    assert_eq!(
        (count(413), count(429), count(204)),
        (7, 1, 8),
        "{writes:?}"
    );
    assert!(writes.iter().all(|w| w.0 != 204 || w.1 == 5), "{writes:?}");

    // The watermarks advanced: the same readings and one more write only the new one.
    let mut more = records(1..=40);
    more.push(pm(41, TIME, "11", "6"));
    file.write(&more);
    let report = poller.poll().await;
    assert_eq!(
        (report.written, report.rejected),
        (1, 0),
        "{:?}",
        report.error
    );
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 41);
}

#[tokio::test]
async fn the_binary_behind_the_proxy_stores_everything_and_rejects_nothing() {
    let influx = InfluxServer::start().await;
    let proxy = Proxy::start(&influx.url(), 8, 2).await;
    let file = SnapshotFile::new(&records(1..=30));
    let (url, source) = (proxy.url(), file.source());
    // Off the test's one runtime thread, which the proxy needs meanwhile.
    let run = tokio::task::spawn_blocking(move || {
        common::run_once(&["--influx-url", &url, "--influx-db", DB, "--source", &source])
    })
    .await
    .expect("the run");
    assert!(run.success, "{}", run.stderr);
    assert_eq!(
        (run.u64("written"), run.u64("rejected")),
        (30, 0),
        "{}",
        run.report
    );
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 30);
    let writes = proxy.writes();
    assert!(writes.iter().any(|w| w.0 == 413), "{writes:?}");
    assert_eq!(
        writes.iter().filter(|w| w.0 == 429).count(),
        2,
        "{writes:?}"
    );
}

#[tokio::test]
async fn a_single_line_still_too_large_is_refused_and_counted_and_its_watermark_stays() {
    let influx = InfluxServer::start().await;
    let proxy = Proxy::start(&influx.url(), 0, 0).await;
    let file = SnapshotFile::new(&records(1..=3));
    let mut poller = common::poller(&proxy.url(), Source::File(file.path().to_owned())).await;

    let report = poller.poll().await;
    assert_eq!(report.outcome, PollOutcome::Rejected, "{:?}", report.error);
    assert_eq!((report.written, report.rejected), (0, 3));
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 0);
    for sensor in 1..=3 {
        assert_eq!(poller.watermarks.stored(sensor), None, "{sensor}");
    }
    // 3 lines, then 1 and 2, then the 2 as 1 and 1: every single line answered 413 too.
    let writes = proxy.writes();
    assert_eq!(writes.len(), 5, "{writes:?}");
    assert!(writes.iter().all(|w| w.0 == 413), "{writes:?}");

    // Not stored, so offered again when a poll sees them again: stored once the proxy lets
    // them through.
    proxy.set(100, 0);
    file.write(&records(1..=4));
    let report = poller.poll().await;
    assert_eq!(
        (report.written, report.rejected),
        (4, 0),
        "{:?}",
        report.error
    );
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 4);
}

#[tokio::test]
async fn a_429_that_outlasts_the_retries_ends_the_poll_and_loses_nothing() {
    let influx = InfluxServer::start().await;
    let proxy = Proxy::start(&influx.url(), 100, usize::MAX).await;
    let file = SnapshotFile::new(&records(1..=5));
    let mut poller = common::poller(&proxy.url(), Source::File(file.path().to_owned())).await;

    let report = poller.poll().await;
    assert_eq!(report.outcome, PollOutcome::WriteError);
    assert_eq!(report.rejected, 0);
    let writes = proxy.writes();
    assert!(writes.len() > 1, "retried: {writes:?}");
    assert!(writes.iter().all(|w| *w == (429, 5)), "{writes:?}");
    for sensor in 1..=5 {
        assert_eq!(poller.watermarks.stored(sensor), None, "{sensor}");
    }

    // The same snapshot, once the proxy forwards again: everything is stored.
    proxy.set(100, 0);
    let report = poller.poll().await;
    assert_eq!(report.outcome, PollOutcome::Written, "{:?}", report.error);
    assert_eq!((report.written, report.rejected), (5, 0));
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 5);
    assert_eq!(poller.watermarks.stored(5), Some(time()));
}
