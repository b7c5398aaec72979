//! The ingestor as a service: bad bodies, HTTP errors and InfluxDB outages never stop the loop,
//! and the side port tells what happened.

use std::time::Duration;

use iot_testkit::influx::InfluxServer;

use crate::common::{SnapshotFile, fixture_source, service, wait_count};
use crate::upstream::{Reply, SnapshotServer, pm, snapshot};

/// A sample file of five records.
const SAMPLE: &str = "luftdatenpumpe_doc_models_ldi_upstream.json";

#[tokio::test]
async fn bad_bodies_do_not_stop_the_loop() {
    let influx = InfluxServer::start().await;
    let good = snapshot(&[
        pm(1, "2024-01-15 10:00:00", "10", "5"),
        pm(2, "2024-01-15 10:00:00", "20", "15"),
        pm(3, "2024-01-15 10:00:00", "30", "25"),
    ]);
    let server = SnapshotServer::start(vec![
        Reply::ok("<html><body>502 Bad Gateway</body></html>"),
        Reply::ok(format!(
            "{}<!-- trailing junk -->",
            snapshot(&[pm(1, "2024-01-15 10:00:00", "10", "5")])
        )),
        Reply::ok("[{\"timestamp\": oops}]"),
        Reply::status(500),
        Reply::ok(good),
    ])
    .await;
    let mut daemon = service(&influx.url(), &server.url(), &[]).await;

    wait_count(&influx, "P1", 3).await;
    let bad = r#"aqi_polls_total{outcome="bad_body"}"#;
    assert_eq!(daemon.wait_metric(bad, 3.0).await.unwrap(), 3.0);
    let fetch = r#"aqi_polls_total{outcome="fetch_error"}"#;
    assert_eq!(daemon.metric(fetch).await, Some(1.0));
    assert!(daemon.process.is_running());
    assert_eq!(daemon.status("/readyz").await, Some(200));
}

#[tokio::test]
async fn influxdb_down_at_start_is_waited_for_and_readiness_follows_it() {
    let mut influx = InfluxServer::start().await;
    influx.stop();
    let mut daemon = service(&influx.url(), &fixture_source(SAMPLE), &[]).await;
    assert_eq!(daemon.status("/readyz").await, Some(503));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        daemon.process.is_running(),
        "waits for InfluxDB instead of exiting"
    );

    influx.start_again().await;
    wait_count(&influx, "latitude", 5).await;
    daemon.wait_status("/readyz", 200).await.unwrap();
}

#[tokio::test]
async fn an_influxdb_outage_between_polls_loses_nothing() {
    let mut influx = InfluxServer::start().await;
    let server = SnapshotServer::start(vec![
        Reply::ok(snapshot(&[pm(1, "2024-01-15 10:00:00", "10", "5")])).etag("\"a\""),
    ])
    .await;
    let daemon = service(&influx.url(), &server.url(), &[]).await;
    wait_count(&influx, "P1", 1).await;

    influx.stop();
    server.set(vec![
        Reply::ok(snapshot(&[
            pm(1, "2024-01-15 10:00:00", "10", "5"),
            pm(1, "2024-01-15 10:05:00", "11", "6"),
            pm(2, "2024-01-15 10:05:00", "20", "15"),
        ]))
        .etag("\"b\""),
    ]);
    // Let a poll or two find InfluxDB gone (the writes back off and retry).
    tokio::time::sleep(Duration::from_secs(3)).await;
    influx.start_again().await;

    wait_count(&influx, "P1", 3).await;
    let written = r#"aqi_readings_written_total"#;
    assert_eq!(daemon.wait_metric(written, 3.0).await.unwrap(), 3.0);
}

#[tokio::test]
async fn metrics_count_polls_records_and_skipped_values() {
    let influx = InfluxServer::start().await;
    let file = SnapshotFile::new(&[
        pm(1, "2024-01-15 10:00:00", "10", "nan"),
        pm(2, "2024-01-15 10:00:00", "1999.90", "999.90"),
        pm(3, "2024-01-15 10:00:00", "-1", ""),
        pm(3, "2024-01-15 10:00:00", "-1", ""),
        "{\"sensor\": {\"id\": 9}, \"timestamp\": \"yesterday\"}".to_string(),
    ]);
    let daemon = service(&influx.url(), &file.source(), &[]).await;
    let polls = r#"aqi_polls_total{outcome="written"}"#;
    daemon.wait_metric(polls, 1.0).await.unwrap();
    // The file does not change: the next polls do not read it.
    let unchanged = r#"aqi_polls_total{outcome="not_modified"}"#;
    daemon.wait_metric(unchanged, 1.0).await.unwrap();

    for (sample, want) in [
        (r#"aqi_records_total{outcome="new"}"#, 1.0),
        (r#"aqi_records_total{outcome="no_values"}"#, 2.0),
        (r#"aqi_records_total{outcome="duplicate"}"#, 1.0),
        (r#"aqi_records_total{outcome="bad_timestamp"}"#, 1.0),
        (r#"aqi_values_skipped_total{reason="nan"}"#, 1.0),
        (r#"aqi_values_skipped_total{reason="out_of_range"}"#, 2.0),
        (r#"aqi_values_skipped_total{reason="negative"}"#, 1.0),
        (r#"aqi_values_skipped_total{reason="empty"}"#, 1.0),
        ("aqi_readings_written_total", 1.0),
        ("aqi_tracked_sensors", 3.0),
    ] {
        assert_eq!(daemon.metric(sample).await, Some(want), "{sample}");
    }
    let last = daemon
        .metric("aqi_last_success_timestamp_seconds")
        .await
        .unwrap_or(0.0);
    assert!(last > 1.7e9, "last success time is set: {last}");
}

#[tokio::test]
async fn sigterm_stops_the_service_cleanly() {
    let influx = InfluxServer::start().await;
    let mut daemon = service(&influx.url(), &fixture_source(SAMPLE), &[]).await;
    wait_count(&influx, "latitude", 5).await;
    let status = daemon.process.stop().await;
    assert_eq!(status.code(), Some(0), "{}", daemon.process.log());
}
