//! The coap-server binary against a real InfluxDB, where what is tested is InfluxDB's own
//! behaviour or the binary's: an outage and readiness, creating the database, one point per
//! series and time, InfluxDB's `max-values-per-tag` limit and retention policy, SIGTERM, and
//! the log. The CoAP protocol itself is tested in-process (`protocol.rs`, `open_network.rs`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coap_lite::{CoapOption, MessageType, Packet, RequestType, ResponseType};
use common::CoapServer;
use iot_testkit::coap::{RawClient, code, post, request, temperature_reading, text};
use iot_testkit::influx::InfluxServer;
use iot_testkit::wait;

const TEMPERATURE: &str = "/sensors/dht/temperature";
const HUMIDITY: &str = "/sensors/dht/humidity";
/// How long to listen on for a second answer once every request is answered.
const QUIET: Duration = Duration::from_millis(300);

fn reading(mid: u16, query: &[&str], value: &str) -> Vec<u8> {
    temperature_reading(mid, query, value)
}

/// Every answer that arrives until the client has heard nothing for `quiet`, by message ID.
fn answers(client: &RawClient, quiet: Duration) -> HashMap<u16, Vec<Packet>> {
    answers_of(client, 0, quiet)
}

/// Answers by message ID: until `expected` requests are answered (10 s at most between two
/// answers), then until nothing came for `quiet`, to see any request answered twice.
fn answers_of(client: &RawClient, expected: usize, quiet: Duration) -> HashMap<u16, Vec<Packet>> {
    let mut by_mid: HashMap<u16, Vec<Packet>> = HashMap::new();
    let mut wait = if expected == 0 {
        quiet
    } else {
        Duration::from_secs(10)
    };
    while let Some(bytes) = client.recv_within(wait) {
        let p = Packet::from_bytes(&bytes).expect("answer is CoAP");
        by_mid.entry(p.header.message_id).or_default().push(p);
        if by_mid.len() >= expected {
            wait = quiet;
        }
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
async fn while_influxdb_is_down_readings_get_5_03_with_max_age_and_readiness_drops() {
    let mut influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    influx.stop();
    let c = RawClient::new(server.coap);
    let ans = c.exchange(&post(1, TEMPERATURE, "20.0"));
    assert_eq!(code(&ans), ResponseType::ServiceUnavailable);
    let max_age = ans.get_first_option(CoapOption::MaxAge).expect("Max-Age");
    assert_eq!(max_age, &vec![1u8]);
    assert!(text(&ans).contains("try again in 1 s"));
    server.service.wait_status("/readyz", 503).await.unwrap();

    influx.start_again().await;
    server.service.wait_status("/readyz", 200).await.unwrap();
    assert_eq!(
        code(&c.exchange(&post(2, TEMPERATURE, "20.0"))),
        ResponseType::Changed
    );
    assert_eq!(influx.count("dht", "temperature", "value").await, 1);
}

/// The sums of the server's answer reports (measurement `coap_server`): datagrams, refused,
/// unavailable.
async fn reported(influx: &InfluxServer) -> (i64, i64, i64) {
    let q = r#"SELECT sum("datagrams"), sum("refused"), sum("unavailable") FROM "coap_server""#;
    let rows = influx.rows("dht", q).await;
    let n = |i: usize| rows.first().and_then(|r| r[i].as_i64()).unwrap_or(0);
    (n(1), n(2), n(3))
}

#[tokio::test]
async fn answers_are_reported_to_influxdb_and_an_outage_loses_no_count() {
    let mut influx = InfluxServer::start().await;
    let server = CoapServer::start(
        &influx.url(),
        &["--answer-report-seconds", "1", "--pod-name", "coap-a"],
        "/readyz",
    )
    .await;
    let c = RawClient::new(server.coap);
    assert_eq!(
        code(&c.exchange(&post(1, TEMPERATURE, "20.0"))),
        ResponseType::Changed
    );
    assert_eq!(
        code(&c.exchange(&post(2, TEMPERATURE, "warm"))),
        ResponseType::BadRequest
    );
    let what = "the first two datagrams reported";
    wait::until(what, wait::default_timeout(), || async {
        match reported(&influx).await {
            (2, 1, 0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();

    // During the outage: a 5.03 and a refusal, whose reports fail; they join a later one.
    influx.stop();
    assert_eq!(
        code(&c.exchange(&post(3, TEMPERATURE, "20.0"))),
        ResponseType::ServiceUnavailable
    );
    assert_eq!(
        code(&c.exchange(&post(4, TEMPERATURE, "warm"))),
        ResponseType::BadRequest
    );
    // Long enough for at least one report to fail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    influx.start_again().await;
    let what = "the outage's datagrams reported once InfluxDB is back";
    wait::until(what, wait::default_timeout(), || async {
        match reported(&influx).await {
            (4, 2, 1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    let pods = influx
        .rows(
            "dht",
            r#"SHOW TAG VALUES FROM "coap_server" WITH KEY = "pod""#,
        )
        .await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0][1], "coap-a");
}

#[tokio::test]
async fn the_server_starts_before_influxdb_and_creates_the_database_once_it_answers() {
    let mut influx = InfluxServer::start().await;
    influx.stop();
    let server = CoapServer::start(&influx.url(), &[], "/healthz").await;
    assert_eq!(server.service.status("/readyz").await, Some(503));
    influx.start_again().await;
    server.service.wait_status("/readyz", 200).await.unwrap();
    let c = RawClient::new(server.coap);
    assert_eq!(
        code(&c.exchange(&post(1, HUMIDITY, "50"))),
        ResponseType::Changed
    );
    assert_eq!(influx.count("dht", "humidity", "value").await, 1);
}

#[tokio::test]
async fn sigterm_flushes_queued_readings_before_exit() {
    let influx = InfluxServer::start().await;
    // A fixed linger keeps the readings queued until SIGTERM flushes them.
    let mut server = CoapServer::start(
        &influx.url(),
        &["--batch-linger-ms", "5000", "--batch-fixed-linger"],
        "/readyz",
    )
    .await;
    let c = RawClient::new(server.coap);
    for mid in 0..5u16 {
        c.send(&post(mid, TEMPERATURE, "20.0").to_bytes().unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.service.process.stop().await;
    assert!(status.success(), "{status}");
    let answers = (0..5)
        .filter_map(|_| c.recv_within(Duration::from_secs(10)))
        .count();
    assert_eq!(answers, 5);
    assert_eq!(influx.count("dht", "temperature", "value").await, 5);
}

#[tokio::test]
async fn a_reading_sent_again_with_the_same_sensor_time_is_stored_once() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let c = RawClient::new(server.coap);
    let now_ms = now_ms();
    let ts = format!("ts={now_ms}");
    // As a client does after a 5.03 or a lost answer: a new exchange (new message ID).
    for mid in [1, 2] {
        let req = request(
            MessageType::Confirmable,
            RequestType::Post,
            mid,
            TEMPERATURE,
            &["sensor=dht-1", &ts],
            b"21.5",
        );
        assert_eq!(code(&c.exchange(&req)), ResponseType::Changed);
    }
    let rows = influx.rows("dht", "SELECT value FROM temperature").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0][0],
        (now_ms as u64) * 1_000_000,
        "the point has the sensor's time"
    );
}

#[tokio::test]
async fn the_log_has_no_colour_codes_when_stderr_is_not_a_terminal() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let log = server.service.process.log();
    assert!(log.contains("coap-server listening"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a plain log: {log:?}"
    );
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
    let mut sensor_answers = answers_of(&sensor, usize::from(SENSOR) - 1, QUIET);
    sensor_answers.entry(0).or_default().insert(0, first);
    let mut flood_answers = answers_of(&flood, usize::from(FLOOD) - LIMIT, QUIET);
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
        let got = answers_of(&client, usize::from(READINGS), QUIET);
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
        let again = answers_of(&client, usize::from(READINGS), QUIET);
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
