//! The shared writer against a real InfluxDB (behind a slow proxy where the test needs writes
//! to stay in flight).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iot_common::batch::{WriterMetrics, Written};
use iot_common::{BatchConfig, BatchWriter, InfluxArgs, InfluxClient, Line, RetryPolicy};
use iot_testkit::influx::InfluxServer;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc::UnboundedReceiver;

fn args(url: String, user: &str, pass: &str) -> InfluxArgs {
    InfluxArgs {
        influx_url: url,
        influx_username: user.into(),
        influx_password: pass.into(),
        influx_timeout_ms: 2000,
    }
}

fn line(i: i64) -> String {
    let mut s = String::new();
    Line::new(&mut s, "m")
        .tag("t", "x")
        .field_f64("v", i as f64)
        .finish(1_000 + i);
    s
}

#[tokio::test]
async fn batches_are_written_and_every_point_is_acknowledged() {
    let influx = InfluxServer::start().await;
    let client = InfluxClient::new(&args(influx.url(), "", ""), "w").unwrap();
    client.create_database().await.unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sink = acked.clone();
    let writer = BatchWriter::spawn(
        client,
        BatchConfig {
            max_points: 7,
            ..BatchConfig::default()
        },
        WriterMetrics::new(&mut Registry::default()),
        Arc::new(move |ids: Vec<i64>, r| {
            assert!(r.is_stored(), "{r:?}");
            sink.lock().unwrap().extend(ids)
        }),
    );
    for i in 0..100 {
        writer.submit(line(i), i).await.unwrap();
    }
    writer.flush().await.unwrap();
    let mut got = acked.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert_eq!(influx.count("w", "m", "v").await, 100);
    writer.close().await;
}

#[tokio::test]
async fn a_batch_stored_in_part_hands_back_each_point_once_stored_or_refused() {
    let influx = InfluxServer::start().await;
    let client = InfluxClient::new(&args(influx.url(), "", ""), "w").unwrap();
    influx.query("", "CREATE DATABASE w WITH DURATION 1h").await;
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let two_hours = 2 * 3600 * 1_000_000_000;
    // Every seventh point is older than the retention: InfluxDB drops it, stores the others.
    let is_old = |i: i64| i % 7 == 3;
    let point = |i: i64| {
        let mut s = String::new();
        let ts = if is_old(i) {
            now_ns - two_hours
        } else {
            now_ns
        } + i;
        Line::new(&mut s, "m")
            .tag("t", "x")
            .field_f64("v", i as f64)
            .finish(ts);
        s
    };
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let sink = outcomes.clone();
    let mut registry = Registry::default();
    let metrics = WriterMetrics::new(&mut registry);
    let writer = BatchWriter::spawn(
        client,
        BatchConfig {
            max_points: 100,
            // One batch: the points gather while nothing is written.
            linger: Duration::from_millis(300),
            fixed_linger: true,
            ..BatchConfig::default()
        },
        metrics,
        Arc::new(move |ids: Vec<i64>, w: Written<'_>| {
            let refused = matches!(w, Written::Refused(_));
            assert!(w.is_stored() || refused, "{w:?}");
            sink.lock()
                .unwrap()
                .extend(ids.into_iter().map(|i| (i, w.is_stored())));
        }),
    );
    for i in 0..100 {
        writer.submit(point(i), i).await.unwrap();
    }
    writer.flush().await.unwrap();
    let mut got = outcomes.lock().unwrap().clone();
    got.sort();
    let want: Vec<(i64, bool)> = (0..100).map(|i| (i, !is_old(i))).collect();
    assert_eq!(got, want, "each point once, stored unless old");
    assert_eq!(influx.count("w", "m", "v").await, 86);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("influx_points_refused_total 14"), "{text}");
    assert!(text.contains("influx_points_written_total 86"), "{text}");
    writer.close().await;
}

#[tokio::test]
async fn credentials_are_sent_and_wrong_ones_are_not_retried() {
    let influx = InfluxServer::start_with_auth("admin", "s3cret").await;
    let good = InfluxClient::new(&args(influx.url(), "admin", "s3cret"), "w").unwrap();
    good.create_database().await.unwrap();
    good.write(line(1)).await.unwrap();
    let bad = InfluxClient::new(&args(influx.url(), "admin", "wrong"), "w").unwrap();
    let err = bad
        .write_with_retry(line(2), &RetryPolicy::patient())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "auth");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_write_during_an_outage_fails_as_unreachable_and_succeeds_after_restart() {
    let mut influx = InfluxServer::start().await;
    let client = InfluxClient::new(&args(influx.url(), "", ""), "w").unwrap();
    client.create_database().await.unwrap();
    influx.stop();
    let quick = RetryPolicy {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        deadline: Duration::from_millis(500),
    };
    let err = client.write_with_retry(line(1), &quick).await.unwrap_err();
    assert_eq!(err.kind(), "unreachable");
    assert!(err.is_retryable());
    influx.start_again().await;
    client.write_with_retry(line(1), &quick).await.unwrap();
    assert_eq!(influx.count("w", "m", "v").await, 1);
}

#[tokio::test]
async fn rejected_points_are_reported_not_retried() {
    let influx = InfluxServer::start().await;
    let client = InfluxClient::new(&args(influx.url(), "", ""), "w").unwrap();
    client.create_database().await.unwrap();
    let err = client.write("m v=\"unterminated 1\n").await.unwrap_err();
    assert_eq!(err.kind(), "rejected");
    assert!(!err.is_retryable());
}

/// An InfluxDB that answers writes only after `delay`: a proxy in front of a real one that
/// records how many writes were in flight at once and how many lines each carried.
struct SlowInflux {
    url: String,
    max_in_flight: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<usize>>>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    delay: Duration,
    http: reqwest::Client,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl SlowInflux {
    async fn start(upstream: String, delay: Duration) -> Self {
        let proxy = Proxy {
            upstream,
            delay,
            http: reqwest::Client::new(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            batches: Arc::default(),
        };
        let (max_in_flight, batches) = (proxy.max_in_flight.clone(), proxy.batches.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        tokio::spawn(async move { axum::serve(listener, app).await });
        SlowInflux {
            url,
            max_in_flight,
            batches,
        }
    }
}

async fn forward(
    axum::extract::State(p): axum::extract::State<Proxy>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, axum::body::Bytes) {
    let is_write = uri.path() == "/write";
    if is_write {
        let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        p.max_in_flight.fetch_max(now, Ordering::SeqCst);
        p.batches
            .lock()
            .expect("batches")
            .push(body.iter().filter(|&&b| b == b'\n').count());
        tokio::time::sleep(p.delay).await;
    }
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let resp = p
        .http
        .request(method, format!("{}{path}", p.upstream))
        .body(body)
        .send()
        .await
        .expect("InfluxDB behind the proxy answers");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("InfluxDB answer body");
    if is_write {
        p.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    (status, bytes)
}

/// A writer whose acknowledged points go to a channel.
fn acking_writer(
    client: InfluxClient,
    config: BatchConfig,
) -> (BatchWriter<i64>, UnboundedReceiver<i64>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = BatchWriter::spawn(
        client,
        config,
        WriterMetrics::new(&mut Registry::default()),
        Arc::new(move |ids: Vec<i64>, r| {
            assert!(r.is_stored(), "{r:?}");
            for id in ids {
                tx.send(id).expect("test still listening");
            }
        }),
    );
    (writer, rx)
}

#[tokio::test]
async fn a_lone_point_is_written_at_once_however_long_the_linger() {
    let influx = InfluxServer::start().await;
    let client = InfluxClient::new(&args(influx.url(), "", ""), "w").unwrap();
    client.create_database().await.unwrap();
    let config = BatchConfig {
        linger: Duration::from_secs(3600),
        ..BatchConfig::default()
    };
    let (writer, mut acked) = acking_writer(client, config);
    for i in 0..3 {
        // One at a time, as a sequential sensor sends them: each is acknowledged on its own,
        // long before any linger could have run out.
        writer.submit(line(i), i).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(60), acked.recv()).await;
        assert_eq!(got.ok().flatten(), Some(i));
    }
    assert_eq!(influx.count("w", "m", "v").await, 3);
    writer.close().await;
}

#[tokio::test]
async fn writes_in_flight_never_exceed_the_bound_and_every_point_lands_once() {
    let influx = InfluxServer::start().await;
    let slow = SlowInflux::start(influx.url(), Duration::from_millis(150)).await;
    let client = InfluxClient::new(&args(slow.url.clone(), "", ""), "w").unwrap();
    client.create_database().await.unwrap();
    let config = BatchConfig {
        max_points: 10,
        max_in_flight: 3,
        ..BatchConfig::default()
    };
    let (writer, mut acked) = acking_writer(client, config);
    for i in 0..300 {
        writer.submit(line(i), i).await.unwrap();
    }
    writer.flush().await.unwrap();
    writer.close().await;
    let mut got = Vec::new();
    while let Ok(id) = acked.try_recv() {
        got.push(id);
    }
    got.sort();
    assert_eq!(
        got,
        (0..300).collect::<Vec<_>>(),
        "each point acknowledged once"
    );
    assert_eq!(influx.count("w", "m", "v").await, 300);
    assert_eq!(
        slow.max_in_flight.load(Ordering::SeqCst),
        3,
        "the bound is reached and never exceeded"
    );
    assert!(slow.batches.lock().unwrap().iter().all(|&n| n <= 10));
}

#[tokio::test]
async fn points_that_arrive_during_a_write_go_out_together_when_it_ends() {
    let influx = InfluxServer::start().await;
    let slow = SlowInflux::start(influx.url(), Duration::from_secs(1)).await;
    let client = InfluxClient::new(&args(slow.url.clone(), "", ""), "w").unwrap();
    client.create_database().await.unwrap();
    let config = BatchConfig {
        max_in_flight: 1,
        ..BatchConfig::default()
    };
    let (writer, mut acked) = acking_writer(client, config);
    writer.submit(line(0), 0).await.unwrap();
    // Wait until the first write is at InfluxDB, then send 50 more while it is in flight.
    while slow.batches.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 1..=50 {
        writer.submit(line(i), i).await.unwrap();
    }
    writer.flush().await.unwrap();
    assert_eq!(*slow.batches.lock().unwrap(), vec![1, 50]);
    let mut n = 0;
    while acked.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 51);
    assert_eq!(influx.count("w", "m", "v").await, 51);
    writer.close().await;
}
