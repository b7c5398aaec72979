//! Adaptive batching seen from a client, against a real InfluxDB: a sequential sensor does not
//! wait for a linger, and readings written by concurrent batches keep their arrival order and
//! unique timestamps.

mod common;

use coap_lite::ResponseType;
use common::CoapServer;
use iot_testkit::coap::{RawClient, code, post};
use iot_testkit::influx::InfluxServer;

const TEMPERATURE: &str = "/sensors/dht/temperature";
const HUMIDITY: &str = "/sensors/dht/humidity";

#[tokio::test]
async fn a_sequential_client_is_acknowledged_without_waiting_for_the_linger() {
    let influx = InfluxServer::start().await;
    // An hour of linger: a reading that waited for company would never be answered in time.
    let server =
        CoapServer::start(&influx.url(), &["--batch-linger-ms", "3600000"], "/readyz").await;
    let client = RawClient::new(server.coap);
    for mid in 0..5u16 {
        let answer = client.exchange(&post(mid, TEMPERATURE, "21.5"));
        assert_eq!(code(&answer), ResponseType::Changed, "reading {mid}");
        assert_eq!(answer.header.message_id, mid);
    }
    assert_eq!(influx.count("dht", "temperature", "value").await, 5);
}

#[tokio::test]
async fn concurrent_writes_keep_arrival_order_and_unique_timestamps() {
    let influx = InfluxServer::start().await;
    // Small batches and four writes in flight: a burst is spread over many concurrent writes,
    // which may end in any order.
    let server = CoapServer::start(
        &influx.url(),
        &["--batch-size", "10", "--batch-in-flight", "4"],
        "/readyz",
    )
    .await;
    let client = RawClient::new(server.coap);
    const N: u16 = 1000;
    const BURST: u16 = 50; // the client socket's default buffer holds a burst's answers
    let mut answered = vec![false; N as usize];
    for start in (0..N).step_by(BURST as usize) {
        for i in start..start + BURST {
            // No `ts=`: the server stamps each reading on arrival.
            let value = format!("{:.2}", f64::from(i) / 100.0);
            client.send(&post(i, HUMIDITY, &value).to_bytes().unwrap());
        }
        for _ in 0..BURST {
            let answer = client.recv();
            assert_eq!(code(&answer), ResponseType::Changed);
            let i = answer.header.message_id as usize;
            assert!(!answered[i], "reading {i} answered twice");
            answered[i] = true;
        }
    }
    assert!(answered.iter().all(|&a| a));
    // Every reading is its own point (no two share a timestamp), and in time order the points
    // are the readings in the order they were sent.
    let rows = influx
        .rows("dht", "SELECT value FROM humidity ORDER BY time ASC")
        .await;
    let values: Vec<u16> = rows
        .iter()
        .map(|r| (r[1].as_f64().unwrap() * 100.0).round() as u16)
        .collect();
    assert_eq!(values, (0..N).collect::<Vec<_>>());
    let times: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    let metrics = server.service.metrics().await;
    assert!(metrics.contains(&format!("coap_readings_stored_total {N}")));
    // At least N / 10 write requests: the readings really were spread over many batches.
    let writes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("influx_batch_points_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(writes >= u64::from(N / 10), "{writes} writes");
}
