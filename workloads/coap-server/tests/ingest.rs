//! sensor-sim → coap-server → InfluxDB, with the real binaries: exact counts, and no reading lost
//! when InfluxDB goes away mid-stream.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::CoapServer;
use iot_testkit::bins::workspace_bin;
use iot_testkit::influx::InfluxServer;
use iot_testkit::ports::free_tcp_addr;

fn sim() -> Command {
    let mut c = Command::new(workspace_bin("sensor-sim"));
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

/// `sensor-sim load` against `server`: `count` readings over `sockets` sockets with `window`
/// outstanding each, the summary as JSON on stdout.
fn load(server: &CoapServer, count: u32, sockets: u32, window: u32) -> Command {
    let mut c = sim();
    c.args(["load", "--server", &server.coap.to_string()])
        .args(["--count", &count.to_string()])
        .args(["--sockets", &sockets.to_string()])
        .args(["--window", &window.to_string(), "--json"]);
    c
}

#[tokio::test]
async fn simulated_sensors_land_in_influxdb_with_exact_counts_per_place() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let status = sim()
        .args(["--server", &server.coap.to_string()])
        .args(["--http-addr", &free_tcp_addr().to_string()])
        .args([
            "--sensors",
            "3",
            "--places",
            "kitchen,lab",
            "--interval",
            "0.05",
            "--rounds",
            "20",
        ])
        .status()
        .expect("run sensor-sim");
    assert!(status.success());
    assert_eq!(influx.count("dht", "temperature", "value").await, 60);
    assert_eq!(influx.count("dht", "humidity", "value").await, 60);
    // Sensors 1 and 3 are in the kitchen, sensor 2 in the lab.
    let kitchen = influx
        .rows(
            "dht",
            "SELECT count(value) FROM temperature WHERE place = 'kitchen'",
        )
        .await;
    assert_eq!(kitchen[0][1], 40);
    let sensors = influx
        .rows("dht", "SHOW TAG VALUES FROM humidity WITH KEY = sensor")
        .await;
    assert_eq!(sensors.len(), 3);
}

#[tokio::test]
async fn a_load_run_stores_exactly_the_readings_it_reports_acked() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let out = load(&server, 20_000, 4, 64)
        .output()
        .expect("run sensor-sim load");
    assert!(out.status.success(), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["acked"], 20000);
    assert_eq!(summary["failed"], 0);
    assert!(summary["latency_ms_p99"].as_f64().unwrap() > 0.0);
    assert_eq!(influx.count("dht", "temperature", "value").await, 20000);
}

#[tokio::test]
async fn one_socket_with_a_deep_window_loses_nothing_and_stores_nothing_twice() {
    let influx = InfluxServer::start().await;
    // Batches of 100: 512 outstanding readings keep every write slot busy.
    let server = CoapServer::start(&influx.url(), &["--batch-size", "100"], "/readyz").await;
    let out = load(&server, 30_000, 1, 512)
        .output()
        .expect("run sensor-sim load");
    assert!(out.status.success(), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["acked"], 30000);
    assert_eq!(summary["failed"], 0);
    assert_eq!(influx.count("dht", "temperature", "value").await, 30000);
    let metrics = server.service.metrics().await;
    assert!(
        metrics.contains("coap_readings_stored_total 30000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("influx_points_written_total 30000"),
        "{metrics}"
    );
}

#[tokio::test]
async fn influxdb_stopped_mid_stream_and_restarted_loses_no_reading() {
    let mut influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    // 6000 readings at 1000/s: the outage below falls in the middle of the run.
    let running = load(&server, 6000, 2, 64)
        .args(["--rate", "1000", "--drain", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sensor-sim load");
    tokio::time::sleep(Duration::from_secs(2)).await;
    influx.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    influx.start_again().await;
    let out = tokio::task::spawn_blocking(move || running.wait_with_output())
        .await
        .unwrap()
        .expect("sensor-sim output");
    assert!(out.status.success(), "{out:?}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["acked"], 6000);
    assert!(
        summary["unavailable"].as_u64().unwrap() > 0,
        "the outage was seen as 5.03 answers: {summary}"
    );
    assert_eq!(influx.count("dht", "temperature", "value").await, 6000);
    assert!(
        server
            .service
            .metrics()
            .await
            .contains("coap_readings_stored_total 6000")
    );
}
