//! Adaptive batching seen from a client, in-process against an in-memory sink: a sequential
//! sensor does not wait for a linger, and readings written by concurrent batches keep their
//! arrival order and unique timestamps.

mod in_process;

use std::time::Duration;

use coap_lite::ResponseType;
use coap_server::Config;
use in_process::{FakeSink, InProcess, config};
use iot_common::BatchConfig;
use iot_testkit::coap::{RawClient, code, post};

const TEMPERATURE: &str = "/sensors/dht/temperature";
const HUMIDITY: &str = "/sensors/dht/humidity";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_client_is_acknowledged_without_waiting_for_the_linger() {
    // An hour of linger: a reading that waited for company would never be answered in time.
    let batch = BatchConfig {
        linger: Duration::from_secs(3600),
        ..config().batch
    };
    let server = InProcess::start(Config { batch, ..config() });
    let client = RawClient::new(server.coap);
    for mid in 0..5u16 {
        let answer = client.exchange(&post(mid, TEMPERATURE, "21.5"));
        assert_eq!(code(&answer), ResponseType::Changed, "reading {mid}");
        assert_eq!(answer.header.message_id, mid);
    }
    assert_eq!(server.sink.count("temperature"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_keep_arrival_order_and_unique_timestamps() {
    // Small batches and four slow writes in flight: a burst is spread over many concurrent
    // writes, which may end in any order.
    let batch = BatchConfig {
        max_points: 10,
        max_in_flight: 4,
        ..config().batch
    };
    let sink = FakeSink::default();
    sink.delay(Duration::from_millis(2));
    let server = InProcess::start_with(sink, Config { batch, ..config() });
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
    let mut points: Vec<(i64, u16)> = server
        .sink
        .lines()
        .iter()
        .map(|l| {
            let mut words = l.split(' ').skip(1);
            let value: f64 = words.next().unwrap()["value=".len()..].parse().unwrap();
            let ts: i64 = words.next().unwrap().parse().unwrap();
            (ts, (value * 100.0).round() as u16)
        })
        .collect();
    points.sort_unstable();
    let values: Vec<u16> = points.iter().map(|p| p.1).collect();
    assert_eq!(values, (0..N).collect::<Vec<_>>());
    assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
    let metrics = server.metrics();
    assert!(metrics.contains(&format!("coap_readings_stored_total {N}")));
    // At least N / 10 write requests: the readings really were spread over many batches.
    // Counted by the sink, which sees each write before its readings are answered.
    let writes = server.sink.writes();
    assert!(writes >= usize::from(N / 10), "{writes} writes");
}
