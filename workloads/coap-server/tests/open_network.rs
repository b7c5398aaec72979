//! coap-server on an open network, against a real InfluxDB whose limits are what is tested:
//! partial writes answered per reading, and floods that must not cost well-behaved senders.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coap_lite::{MessageType, Packet, RequestType, ResponseType};
use common::CoapServer;
use iot_testkit::coap::{RawClient, code, request, text};
use iot_testkit::influx::InfluxServer;

const TEMPERATURE: &str = "/sensors/dht/temperature";

fn reading(mid: u16, query: &[&str], value: &str) -> Vec<u8> {
    request(
        MessageType::Confirmable,
        RequestType::Post,
        mid,
        TEMPERATURE,
        query,
        value.as_bytes(),
    )
    .to_bytes()
    .expect("encodable")
}

/// Every answer that arrives until the client has heard nothing for `quiet`, by message ID.
fn answers(client: &RawClient, quiet: Duration) -> HashMap<u16, Vec<Packet>> {
    let mut by_mid: HashMap<u16, Vec<Packet>> = HashMap::new();
    while let Some(bytes) = client.recv_within(quiet) {
        let p = Packet::from_bytes(&bytes).expect("answer is CoAP");
        by_mid.entry(p.header.message_id).or_default().push(p);
    }
    by_mid
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

async fn count_where(influx: &InfluxServer, condition: &str) -> u64 {
    let q = format!("SELECT count(value) FROM temperature WHERE {condition}");
    influx
        .rows("dht", &q)
        .await
        .first()
        .and_then(|r| r.get(1))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The sum of a counter family over its labels.
fn family_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_flood_of_new_places_past_influxdbs_limit_costs_a_well_behaved_sensor_nothing() {
    const LIMIT: usize = 20;
    const FLOOD: u16 = 200;
    const SENSOR: u16 = 100;
    let limit = LIMIT.to_string();
    let influx =
        InfluxServer::start_with_env(&[("INFLUXDB_DATA_MAX_VALUES_PER_TAG", &limit)]).await;
    // A short fixed linger puts flood and sensor readings into the same batches.
    let server = CoapServer::start(
        &influx.url(),
        &["--batch-linger-ms", "20", "--batch-fixed-linger"],
        "/readyz",
    )
    .await;
    let flood = RawClient::new(server.coap);
    let sensor = RawClient::new(server.coap);
    let sensor_reading = |mid: u16| reading(mid, &["place=kitchen", "sensor=dht-1"], "21.5");
    let flood_reading = |i: u16| reading(i, &[&format!("place=flood-{i}")], "20");
    // InfluxDB checks its limit before each write, so a first write of many new values goes
    // past it: one value at a time until it is reached, then the flood in batches.
    sensor.send(&sensor_reading(0));
    let first = sensor.recv();
    let mut first_answers = Vec::new();
    for i in 0..LIMIT as u16 {
        flood.send(&flood_reading(i));
        first_answers.push(flood.recv());
    }
    let mut sensor_mids = 1..SENSOR;
    for i in LIMIT as u16..FLOOD {
        flood.send(&flood_reading(i));
        if i % 2 == 0
            && let Some(mid) = sensor_mids.next()
        {
            sensor.send(&sensor_reading(mid));
        }
    }
    for mid in sensor_mids {
        sensor.send(&sensor_reading(mid));
    }
    let mut sensor_answers = answers(&sensor, Duration::from_secs(3));
    sensor_answers.entry(0).or_default().insert(0, first);
    let mut flood_answers = answers(&flood, Duration::from_millis(500));
    for p in first_answers {
        flood_answers
            .entry(p.header.message_id)
            .or_default()
            .insert(0, p);
    }

    assert_eq!(sensor_answers.len(), usize::from(SENSOR));
    for (mid, got) in &sensor_answers {
        assert_eq!(got.len(), 1, "reading {mid} answered once");
        assert_eq!(code(&got[0]), ResponseType::Changed, "{}", text(&got[0]));
    }
    assert_eq!(
        count_where(&influx, "place = 'kitchen'").await,
        u64::from(SENSOR)
    );

    assert_eq!(flood_answers.len(), usize::from(FLOOD));
    let mut stored = 0;
    let mut refused = 0;
    for (mid, got) in &flood_answers {
        assert_eq!(got.len(), 1, "flood reading {mid} answered once");
        match code(&got[0]) {
            ResponseType::Changed => stored += 1,
            ResponseType::BadRequest => {
                assert!(
                    text(&got[0]).contains("max-values-per-tag"),
                    "{}",
                    text(&got[0])
                );
                refused += 1;
            }
            other => panic!("flood reading {mid}: {other:?} {}", text(&got[0])),
        }
    }
    // The kitchen is one of the values the limit allows.
    assert_eq!(stored, LIMIT as u64 - 1);
    assert_eq!(stored + refused, u64::from(FLOOD));
    assert_eq!(count_where(&influx, "place =~ /^flood-/").await, stored);

    // A refused reading sent again, as a retransmission or as a new exchange, is refused again.
    let refused_mid = *flood_answers
        .iter()
        .find(|(_, got)| code(&got[0]) == ResponseType::BadRequest)
        .unwrap()
        .0;
    let place = format!("place=flood-{refused_mid}");
    flood.send(&reading(refused_mid, &[&place], "20"));
    assert_eq!(code(&flood.recv()), ResponseType::BadRequest);
    flood.send(&reading(60_000, &[&place], "20"));
    assert_eq!(code(&flood.recv()), ResponseType::BadRequest);
    assert_eq!(count_where(&influx, "place =~ /^flood-/").await, stored);
    let metrics = server.service.metrics().await;
    assert_eq!(family_sum(&metrics, "coap_readings_unavailable_total"), 0);
}

#[tokio::test]
async fn readings_older_than_the_retention_are_refused_and_the_others_stored_once() {
    const READINGS: u16 = 100;
    let influx = InfluxServer::start().await;
    influx
        .query("", "CREATE DATABASE dht WITH DURATION 1h")
        .await;
    let two_hours_ago = now_ms() - 2 * 3_600_000;
    let is_old = |mid: u16| mid % 10 == 3;
    for (round, extra) in [(0u16, &[][..]), (1, &["--retention", "1h"][..])] {
        let mut args = vec!["--batch-linger-ms", "100", "--batch-fixed-linger"];
        args.extend_from_slice(extra);
        let server = CoapServer::start(&influx.url(), &args, "/readyz").await;
        let client = RawClient::new(server.coap);
        let sensor = format!("sensor=round-{round}");
        let old_ts = format!("ts={}", two_hours_ago + u128::from(round));
        let send_all = || {
            for mid in 0..READINGS {
                let query: Vec<&str> = if is_old(mid) {
                    vec![&sensor, &old_ts]
                } else {
                    vec![&sensor]
                };
                client.send(&reading(mid, &query, &format!("{}", mid % 50)));
            }
        };
        send_all();
        let got = answers(&client, Duration::from_secs(2));
        assert_eq!(got.len(), usize::from(READINGS), "round {round}");
        for (mid, answers) in &got {
            assert_eq!(
                answers.len(),
                1,
                "round {round}: reading {mid} answered once"
            );
            let want = if is_old(*mid) {
                ResponseType::BadRequest
            } else {
                ResponseType::Changed
            };
            assert_eq!(code(&answers[0]), want, "{}", text(&answers[0]));
        }
        let good = u64::from(READINGS) - 10;
        let here = format!("sensor = 'round-{round}'");
        assert_eq!(count_where(&influx, &here).await, good, "round {round}");

        // Retransmitted (the answers were lost): the same answers, nothing stored again.
        send_all();
        let again = answers(&client, Duration::from_secs(2));
        assert_eq!(again.len(), usize::from(READINGS));
        for (mid, answers) in &again {
            let ok = code(&answers[0]) == ResponseType::Changed;
            assert_eq!(ok, !is_old(*mid), "round {round}: reading {mid}");
        }
        assert_eq!(count_where(&influx, &here).await, good, "round {round}");

        let metrics = server.service.metrics().await;
        let rewrites = metric(&metrics, "influx_partial_rewrites_total");
        if round == 0 {
            // InfluxDB dropped them: found by writing halves again, a few writes per old one.
            assert!(rewrites > 0 && rewrites <= 10 * 2 * 7, "{rewrites}");
        } else {
            // Refused before InfluxDB saw them.
            assert_eq!(rewrites, 0);
            assert!(
                metrics.contains(r#"coap_requests_rejected_total{reason="too_old"} 20"#),
                "{metrics}"
            );
        }
    }
}

#[tokio::test]
async fn non_confirmable_requests_get_at_most_three_times_their_bytes_back() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
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
        while let Some(answer) = client.recv_within(Duration::from_millis(500)) {
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
    let metrics = server.service.metrics().await;
    assert!(family_sum(&metrics, "coap_answers_unamplified_total") >= 1000);
}

#[tokio::test]
async fn a_source_beyond_its_rate_is_dropped_and_others_are_served() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(
        &influx.url(),
        &["--rate-limit", "20", "--rate-burst", "20"],
        "/readyz",
    )
    .await;
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
    while flood.recv_within(Duration::from_millis(500)).is_some() {
        answered += 1;
    }
    // The burst, and what the rate refilled while the flood was sent.
    assert!((20..=60).contains(&answered), "{answered}");
    let other = RawClient::from_ip(server.coap, [127, 0, 0, 2]);
    assert_eq!(
        code(&other.exchange(&iot_testkit::coap::post(1, TEMPERATURE, "20"))),
        ResponseType::Changed
    );
    let metrics = server.service.metrics().await;
    let limited = metric(&metrics, "coap_rate_limited_total");
    assert_eq!(limited, 500 - answered, "{metrics}");
}

#[tokio::test]
async fn a_flood_of_new_exchanges_does_not_flush_another_sources_retransmissions() {
    const FLOOD: u16 = 3000;
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(
        &influx.url(),
        &["--dedup-capacity", "1000", "--dedup-per-source", "100"],
        "/readyz",
    )
    .await;
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
        if count_where(&influx, "place = 'flood'").await == u64::from(FLOOD) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count_where(&influx, "place = 'flood'").await,
        u64::from(FLOOD)
    );

    // The sensor's ACK was lost: its retransmission is recognised, answered, not stored again.
    sensor.send(&first);
    assert_eq!(code(&sensor.recv()), ResponseType::Changed);
    assert_eq!(count_where(&influx, "place = 'kitchen'").await, 1);
    let metrics = server.service.metrics().await;
    assert_eq!(metric(&metrics, "coap_duplicates_total"), 1, "{metrics}");
}

#[tokio::test]
async fn sigterm_while_influxdb_hangs_exits_within_the_drain_bound_and_loses_nothing_acknowledged()
{
    const DRAIN_SECONDS: u64 = 3;
    let influx = InfluxServer::start().await;
    let drain = DRAIN_SECONDS.to_string();
    // Small batches: unbounded, the drain would take many write timeouts one after another.
    let args = ["--drain-seconds", &drain, "--batch-size", "100"];
    let mut server = CoapServer::start(&influx.url(), &args, "/readyz").await;
    let client = RawClient::new(server.coap);
    for mid in 0..20 {
        let answer = client.exchange(&iot_testkit::coap::post(mid, TEMPERATURE, "20"));
        assert_eq!(code(&answer), ResponseType::Changed);
    }
    influx.pause();
    for mid in 20..2020 {
        client.send(&reading(mid, &[], "20"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server.service.process.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(DRAIN_SECONDS + 2),
        "exit took {took:?}"
    );
    let acknowledged = 20
        + answers(&client, Duration::from_millis(300))
            .values()
            .filter(|got| code(&got[0]) == ResponseType::Changed)
            .count() as u64;
    influx.resume();
    let stored = influx.count("dht", "temperature", "value").await;
    assert!(
        stored >= acknowledged && stored <= 2020,
        "{stored} stored, {acknowledged} acknowledged"
    );
}

#[tokio::test]
async fn libcoap_coap_client_is_told_why_a_reading_is_refused() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &["--retention", "1h"], "/readyz").await;
    let base = format!("coap://127.0.0.1:{}", server.coap.port());
    let old = now_ms() - 2 * 3_600_000;
    let out = std::process::Command::new("/usr/bin/coap-client-notls")
        .args(["-B", "5", "-m", "post", "-e", "21.5"])
        .arg(format!("{base}{TEMPERATURE}?sensor=old&ts={old}"))
        .output()
        .expect("run coap-client (make deps installs libcoap3-bin)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("4.00"), "{said}");
    assert!(said.contains("older than the database keeps"), "{said}");
    assert_eq!(influx.count("dht", "temperature", "value").await, 0);
}
