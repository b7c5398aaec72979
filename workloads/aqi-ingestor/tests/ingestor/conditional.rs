//! Polling over HTTP like a good citizen: conditional GET (ETag / If-Modified-Since), gzip, a
//! User-Agent naming the project, and an unchanged snapshot neither downloaded nor processed.
//! Drives the library's poller against a local server and a real InfluxDB.

use aqi_ingestor::fetch::Source;
use aqi_ingestor::poll::{PollOutcome, Poller};
use iot_testkit::influx::InfluxServer;

use crate::common::{self, DB};
use crate::upstream::{Reply, SnapshotServer, header, pm, snapshot, synthetic};

const LAST_MODIFIED: &str = "Mon, 15 Jan 2024 10:05:00 GMT";

async fn poller(influx: &InfluxServer, url: &str) -> Poller {
    common::poller(&influx.url(), Source::Url(url.to_string())).await
}

fn first_snapshot() -> String {
    snapshot(&[
        pm(1, "2024-01-15 10:00:00", "10", "5"),
        pm(2, "2024-01-15 10:00:00", "20", "15"),
    ])
}

fn second_snapshot() -> String {
    snapshot(&[
        pm(1, "2024-01-15 10:00:00", "10", "5"),
        pm(2, "2024-01-15 10:05:00", "21", "16"),
        pm(3, "2024-01-15 10:05:00", "30", "25"),
    ])
}

#[tokio::test]
async fn an_unchanged_snapshot_is_neither_downloaded_nor_processed() {
    let influx = InfluxServer::start().await;
    let server = SnapshotServer::start(vec![
        Reply::ok(first_snapshot())
            .etag("\"v1\"")
            .last_modified(LAST_MODIFIED),
    ])
    .await;
    let mut p = poller(&influx, &server.url()).await;

    let first = p.poll().await;
    assert_eq!(first.outcome, PollOutcome::Written, "{:?}", first.error);
    assert_eq!(first.written, 2);
    let sent = server.bytes_sent();

    let second = p.poll().await;
    assert_eq!(second.outcome, PollOutcome::NotModified);
    assert_eq!((second.bytes, second.stats.total_records()), (0, 0));
    assert_eq!(server.bytes_sent(), sent, "a 304 carries no body");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(header(&requests[0], "if-none-match"), None);
    assert_eq!(header(&requests[1], "if-none-match"), Some("\"v1\""));
    assert_eq!(
        header(&requests[1], "if-modified-since"),
        Some(LAST_MODIFIED)
    );
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 2);
}

#[tokio::test]
async fn if_modified_since_alone_is_used_when_there_is_no_etag() {
    let influx = InfluxServer::start().await;
    let server = SnapshotServer::start(vec![
        Reply::ok(first_snapshot()).last_modified(LAST_MODIFIED),
    ])
    .await;
    let mut p = poller(&influx, &server.url()).await;
    assert_eq!(p.poll().await.outcome, PollOutcome::Written);
    assert_eq!(p.poll().await.outcome, PollOutcome::NotModified);
    let requests = server.requests();
    assert_eq!(
        header(&requests[1], "if-modified-since"),
        Some(LAST_MODIFIED)
    );
    assert_eq!(header(&requests[1], "if-none-match"), None);
}

#[tokio::test]
async fn a_server_that_ignores_the_conditions_but_repeats_the_etag_is_not_read_again() {
    let influx = InfluxServer::start().await;
    let server = SnapshotServer::start(vec![Reply::ok(first_snapshot()).etag("\"v1\"")]).await;
    server.honour_conditions(false);
    let mut p = poller(&influx, &server.url()).await;
    assert_eq!(p.poll().await.outcome, PollOutcome::Written);
    let second = p.poll().await;
    assert_eq!(second.outcome, PollOutcome::NotModified);
    assert_eq!(second.bytes, 0, "the body was not read");
}

#[tokio::test]
async fn a_changed_snapshot_writes_only_its_new_readings() {
    let influx = InfluxServer::start().await;
    let server = SnapshotServer::start(vec![Reply::ok(first_snapshot()).etag("\"v1\"")]).await;
    let mut p = poller(&influx, &server.url()).await;
    assert_eq!(p.poll().await.written, 2);

    server.set(vec![Reply::ok(second_snapshot()).etag("\"v2\"")]);
    let changed = p.poll().await;
    assert_eq!(changed.outcome, PollOutcome::Written);
    assert_eq!(changed.written, 2, "sensor 1 did not change; 2 and 3 did");
    assert_eq!(changed.stats.total_records(), 3);
    assert_eq!(
        header(&server.requests()[1], "if-none-match"),
        Some("\"v1\"")
    );
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 4);

    // The same content under a new ETag is processed, and writes nothing.
    server.set(vec![Reply::ok(second_snapshot()).etag("\"v3\"")]);
    let same = p.poll().await;
    assert_eq!(same.outcome, PollOutcome::NoNew);
    assert_eq!((same.written, same.stats.total_records()), (0, 3));
}

#[tokio::test]
async fn snapshots_are_requested_gzipped_by_a_named_client() {
    let influx = InfluxServer::start().await;
    let body = synthetic(2000);
    let server = SnapshotServer::start(vec![Reply::ok(body.clone()).etag("\"gz\"")]).await;
    let mut p = poller(&influx, &server.url()).await;
    let report = p.poll().await;
    assert_eq!(report.outcome, PollOutcome::Written, "{:?}", report.error);
    assert_eq!(
        report.bytes,
        body.len() as u64,
        "decompressed on the way in"
    );
    assert!(
        server.bytes_sent() * 3 < body.len(),
        "gzip on the wire: {} of {}",
        server.bytes_sent(),
        body.len()
    );
    let request = &server.requests()[0];
    assert!(
        header(request, "accept-encoding").is_some_and(|v| v.contains("gzip")),
        "{request:?}"
    );
    let agent = header(request, "user-agent").unwrap_or("");
    assert!(agent.starts_with("iot-operator-aqi-ingestor/"), "{agent}");
    assert_eq!(
        influx.count(DB, "air_quality", "latitude").await,
        report.written
    );
}

#[tokio::test]
async fn a_snapshot_that_failed_is_fetched_again_in_full() {
    let influx = InfluxServer::start().await;
    let good = first_snapshot();
    let truncated = good[..good.len() - 20].to_string();
    let server = SnapshotServer::start(vec![
        Reply::ok(truncated).etag("\"v1\""),
        Reply::ok(good).etag("\"v1\""),
    ])
    .await;
    let mut p = poller(&influx, &server.url()).await;

    let bad = p.poll().await;
    assert_eq!(bad.outcome, PollOutcome::BadBody);
    assert_eq!(bad.written, 1, "the complete record before the cut is kept");

    let retry = p.poll().await;
    assert_eq!(
        header(&server.requests()[1], "if-none-match"),
        None,
        "validators of a failed snapshot are not remembered"
    );
    assert_eq!(retry.outcome, PollOutcome::Written);
    assert_eq!(retry.written, 1, "only the reading that was missing");
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 2);
}

#[tokio::test]
async fn http_errors_are_fetch_errors_and_the_next_poll_recovers() {
    let influx = InfluxServer::start().await;
    let server = SnapshotServer::start(vec![Reply::status(503), Reply::ok(first_snapshot())]).await;
    let mut p = poller(&influx, &server.url()).await;
    let failed = p.poll().await;
    assert_eq!(failed.outcome, PollOutcome::FetchError);
    assert!(
        failed
            .error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("503")),
        "{:?}",
        failed.error
    );
    assert_eq!(p.poll().await.written, 2);
}
