//! coap-server on an open network, in-process against an in-memory sink: answers that are no
//! reflector, a per-source rate limit, and floods that must not cost well-behaved senders. The
//! floods past InfluxDB's own limits are in `influxdb.rs`.

mod in_process;

use std::time::Duration;

use coap_lite::{MessageType, RequestType, ResponseType};
use coap_server::Config;
use in_process::{InProcess, config, family_sum, metric};
use iot_testkit::coap::{RawClient, code, request, temperature_reading, text};

const TEMPERATURE: &str = "/sensors/dht/temperature";

fn reading(mid: u16, query: &[&str], value: &str) -> Vec<u8> {
    temperature_reading(mid, query, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_confirmable_requests_get_at_most_three_times_their_bytes_back() {
    let server = InProcess::start(config());
    let client = RawClient::new(server.coap);
    let non = MessageType::NonConfirmable;
    let mut bad_option = request(non, RequestType::Post, 3, TEMPERATURE, &[], b"20");
    bad_option.add_option(coap_lite::CoapOption::Unknown(2049), vec![1]);
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        (
            "/.well-known/core",
            request(non, RequestType::Get, 1, "/.well-known/core", &[], b"")
                .to_bytes()
                .unwrap(),
        ),
        (
            "unknown path",
            request(non, RequestType::Get, 2, "/x", &[], b"")
                .to_bytes()
                .unwrap(),
        ),
        ("bad critical option", bad_option.to_bytes().unwrap()),
        (
            "bad payload",
            request(non, RequestType::Post, 4, TEMPERATURE, &[], b"warm")
                .to_bytes()
                .unwrap(),
        ),
        (
            "bad query",
            request(non, RequestType::Post, 5, TEMPERATURE, &["room=1"], b"20")
                .to_bytes()
                .unwrap(),
        ),
    ];
    let (mut sent_all, mut received_all) = (0, 0);
    for (what, bytes) in &kinds {
        const TIMES: usize = 200;
        for _ in 0..TIMES {
            client.send(bytes);
        }
        let mut received = 0;
        let mut answers = 0;
        while let Some(answer) = client.recv_within(Duration::from_millis(200)) {
            received += answer.len();
            answers += 1;
        }
        let sent = bytes.len() * TIMES;
        assert!(answers > 0, "{what}: no answer at all");
        assert!(received <= 3 * sent, "{what}: {received} bytes for {sent}");
        (sent_all, received_all) = (sent_all + sent, received_all + received);
    }
    assert!(received_all <= 3 * sent_all);
    // A confirmable request still gets the whole answer.
    let con = request(
        MessageType::Confirmable,
        RequestType::Get,
        9,
        "/.well-known/core",
        &[],
        b"",
    );
    let list = client.exchange(&con);
    assert_eq!(code(&list), ResponseType::Content);
    assert!(text(&list).contains("</sensors/dht/temperature>"));
    let bad = client.exchange(&request(
        MessageType::Confirmable,
        RequestType::Post,
        10,
        TEMPERATURE,
        &[],
        b"warm",
    ));
    assert!(text(&bad).contains("not a number"), "{}", text(&bad));
    let metrics = server.metrics();
    assert!(family_sum(&metrics, "coap_answers_unamplified_total") >= 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_beyond_its_rate_is_dropped_and_others_are_served() {
    let server = InProcess::start(Config {
        rate_limit: 20,
        rate_burst: 20,
        ..config()
    });
    let flood = RawClient::new(server.coap);
    let probe = request(
        MessageType::NonConfirmable,
        RequestType::Get,
        1,
        "/x",
        &[],
        b"",
    )
    .to_bytes()
    .unwrap();
    for _ in 0..500 {
        flood.send(&probe);
    }
    let mut answered = 0;
    while flood.recv_within(Duration::from_millis(200)).is_some() {
        answered += 1;
    }
    // The burst, and what the rate refilled while the flood was sent.
    assert!((20..=60).contains(&answered), "{answered}");
    let other = RawClient::from_ip(server.coap, [127, 0, 0, 2]);
    assert_eq!(
        code(&other.exchange(&iot_testkit::coap::post(1, TEMPERATURE, "20"))),
        ResponseType::Changed
    );
    let metrics = server.metrics();
    let limited = metric(&metrics, "coap_rate_limited_total");
    assert_eq!(limited, 500 - answered, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_exchanges_does_not_flush_another_sources_retransmissions() {
    const FLOOD: u16 = 3000;
    let server = InProcess::start(Config {
        dedup_capacity: 1000,
        dedup_per_source: 100,
        ..config()
    });
    let sensor = RawClient::from_ip(server.coap, [127, 0, 0, 2]);
    let first = reading(7, &["place=kitchen"], "21.5");
    sensor.send(&first);
    assert_eq!(code(&sensor.recv()), ResponseType::Changed);

    // From one host, many ports, each exchange new.
    let flood: Vec<RawClient> = (0..10).map(|_| RawClient::new(server.coap)).collect();
    for i in 0..FLOOD {
        flood[usize::from(i) % flood.len()].send(&reading(i, &["place=flood"], "20"));
    }
    for _ in 0..100 {
        if server.sink.count("place=flood") == usize::from(FLOOD) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.sink.count("place=flood"), usize::from(FLOOD));

    // The sensor's ACK was lost: its retransmission is recognised, answered, not stored again.
    sensor.send(&first);
    assert_eq!(code(&sensor.recv()), ResponseType::Changed);
    assert_eq!(server.sink.count("place=kitchen"), 1);
    let metrics = server.metrics();
    assert_eq!(metric(&metrics, "coap_duplicates_total"), 1, "{metrics}");
}
