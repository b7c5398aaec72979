//! The shared writer against a real InfluxDB.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iot_common::batch::WriterMetrics;
use iot_common::{BatchConfig, BatchWriter, InfluxArgs, InfluxClient, Line, RetryPolicy};
use iot_testkit::influx::InfluxServer;
use prometheus_client::registry::Registry;

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
            assert!(r.is_ok(), "{r:?}");
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
