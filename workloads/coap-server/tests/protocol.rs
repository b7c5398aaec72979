//! coap-server's CoAP behaviour against a real InfluxDB: answers, retransmissions, bad input,
//! outages and interoperability with libcoap's coap-client.

mod common;

use std::process::Command;
use std::time::Duration;

use coap_lite::{CoapOption, MessageType, RequestType, ResponseType};
use common::CoapServer;
use iot_testkit::coap::{RawClient, code, post, request, text};
use iot_testkit::influx::InfluxServer;

const TEMPERATURE: &str = "/sensors/dht/temperature";
const HUMIDITY: &str = "/sensors/dht/humidity";

#[tokio::test]
async fn a_confirmable_reading_is_acknowledged_once_stored_with_its_tags() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let client = RawClient::new(server.coap);
    let req = request(
        MessageType::Confirmable,
        RequestType::Post,
        100,
        HUMIDITY,
        &["place=lab", "sensor=dht-9"],
        b"41.9",
    );
    let ack = client.exchange(&req);
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 100);
    assert_eq!(ack.get_token(), req.get_token());
    assert_eq!(code(&ack), ResponseType::Changed);
    assert_eq!(text(&ack), "Humidity=41.9 saved successfully!");
    let rows = influx
        .rows("dht", "SELECT value, place, sensor FROM humidity")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1], 41.9);
    assert_eq!(rows[0][2], "lab");
    assert_eq!(rows[0][3], "dht-9");
}

#[tokio::test]
async fn a_retransmitted_request_is_answered_again_but_stored_once() {
    let influx = InfluxServer::start().await;
    // A fixed linger holds the first one pending long enough to see its retransmissions.
    let server = CoapServer::start(
        &influx.url(),
        &["--batch-linger-ms", "200", "--batch-fixed-linger"],
        "/readyz",
    )
    .await;
    let client = RawClient::new(server.coap);
    let bytes = post(7, TEMPERATURE, "21.5").to_bytes().unwrap();
    // Twice while the first is still being batched, and once after it was answered.
    client.send(&bytes);
    client.send(&bytes);
    let first = client.recv();
    assert_eq!(code(&first), ResponseType::Changed);
    assert!(
        client.recv_within(Duration::from_millis(500)).is_none(),
        "a pending duplicate gets no second answer"
    );
    client.send(&bytes);
    let again = client.recv();
    assert_eq!(code(&again), ResponseType::Changed);
    assert_eq!(again.header.message_id, 7);
    // The same message ID with other content is a new request, not a duplicate.
    assert_eq!(
        code(&client.exchange(&post(7, TEMPERATURE, "22.5"))),
        ResponseType::Changed
    );
    assert_eq!(influx.count("dht", "temperature", "value").await, 2);
    assert!(
        server
            .service
            .metrics()
            .await
            .contains("coap_duplicates_total 2")
    );
}

#[tokio::test]
async fn every_class_of_bad_input_gets_a_precise_answer_and_nothing_is_stored() {
    use ResponseType::{BadRequest, MethodNotAllowed, NotFound};
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let c = RawClient::new(server.coap);
    let posts = [
        (TEMPERATURE, "", BadRequest, "empty payload"),
        (TEMPERATURE, "hot", BadRequest, "not a number"),
        (TEMPERATURE, "NaN", BadRequest, "not a finite number"),
        (HUMIDITY, "inf", BadRequest, "not a finite number"),
        (TEMPERATURE, "-273", BadRequest, "the sensor's range"),
        (HUMIDITY, "140", BadRequest, "the sensor's range"),
        ("/sensors/dht/pressure", "1", NotFound, "no resource"),
    ];
    let mut cases: Vec<(coap_lite::Packet, ResponseType, &str)> = posts
        .into_iter()
        .zip(1..)
        .map(|((path, body, want, words), id)| (post(id, path, body), want, words))
        .collect();
    let con = MessageType::Confirmable;
    let get = request(con, RequestType::Get, 8, TEMPERATURE, &[], b"");
    cases.push((get, MethodNotAllowed, "takes POST or PUT"));
    let query = request(con, RequestType::Post, 9, TEMPERATURE, &["room=1"], b"20");
    cases.push((query, BadRequest, "unknown query parameter"));
    for (req, want, words) in &cases {
        let ans = c.exchange(req);
        assert_eq!(code(&ans), *want, "{words}");
        assert!(
            text(&ans).contains(words),
            "{:?} lacks {words:?}",
            text(&ans)
        );
        assert_eq!(ans.header.message_id, req.header.message_id);
    }
    // A non-confirmable bad request is answered non-confirmable.
    let non = request(
        MessageType::NonConfirmable,
        RequestType::Post,
        10,
        TEMPERATURE,
        &[],
        b"x",
    );
    let ans = c.exchange(&non);
    assert_eq!(ans.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(code(&ans), ResponseType::BadRequest);

    // Malformed datagrams: a confirmable one with a broken option is reset, garbage is dropped.
    c.send(&[0x40, 0x02, 0x12, 0x34, 0xd0]); // CON, option header promises a byte that is missing
    let rst = c.recv_within(Duration::from_secs(10)).expect("RST");
    assert_eq!(rst, vec![0x70, 0x00, 0x12, 0x34]);
    // A payload marker with nothing after it is a format error too (RFC 7252 §3).
    c.send(&[0x40, 0x02, 0x12, 0x35, 0xff]);
    let rst = c.recv_within(Duration::from_secs(10)).expect("RST");
    assert_eq!(rst, vec![0x70, 0x00, 0x12, 0x35]);
    c.send(&[0x01, 0x02]);
    c.send(&[0x80, 0x02, 0x00, 0x01]); // version 2
    assert!(c.recv_within(Duration::from_millis(300)).is_none());
    // A CoAP ping gets RST.
    c.send(&[0x40, 0x00, 0x00, 0x2a]);
    assert_eq!(
        c.recv_within(Duration::from_secs(10)).unwrap(),
        vec![0x70, 0x00, 0x00, 0x2a]
    );

    // The server still works and stored nothing of the above.
    assert_eq!(
        code(&c.exchange(&post(11, TEMPERATURE, "20.0"))),
        ResponseType::Changed
    );
    assert_eq!(influx.count("dht", "temperature", "value").await, 1);
    assert_eq!(influx.count("dht", "humidity", "value").await, 0);
    let metrics = server.service.metrics().await;
    assert!(
        metrics.contains(r#"coap_requests_rejected_total{reason="out_of_range"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"coap_malformed_total{reason="format"} 2"#),
        "{metrics}"
    );
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

fn coap_client() -> &'static str {
    let p = "/usr/bin/coap-client-notls";
    assert!(
        std::path::Path::new(p).exists(),
        "libcoap's coap-client is missing: run `make deps` (Debian package libcoap3-bin)"
    );
    p
}

#[tokio::test]
async fn libcoap_coap_client_can_discover_and_post_readings() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let base = format!("coap://127.0.0.1:{}", server.coap.port());
    let run = |args: Vec<String>| {
        let out = Command::new(coap_client())
            .args(["-B", "5"])
            .args(&args)
            .output()
            .expect("run coap-client");
        assert!(out.status.success(), "coap-client {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let core = run(vec![
        "-m".into(),
        "get".into(),
        format!("{base}/.well-known/core"),
    ]);
    assert!(core.contains("</sensors/dht/temperature>"), "{core}");
    assert!(core.contains("</sensors/dht/humidity>"), "{core}");
    let stored = run(vec![
        "-m".into(),
        "post".into(),
        "-e".into(),
        "25.5".into(),
        format!("{base}/sensors/dht/temperature?place=kitchen"),
    ]);
    assert!(
        stored.contains("Temperature=25.5 saved successfully!"),
        "{stored}"
    );
    let stored = run(vec![
        "-m".into(),
        "put".into(),
        "-e".into(),
        "55".into(),
        format!("{base}/sensors/dht/humidity"),
    ]);
    assert!(
        stored.contains("Humidity=55 saved successfully!"),
        "{stored}"
    );
    let rows = influx
        .rows("dht", "SELECT value, place FROM temperature")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][2], "kitchen");
    assert_eq!(influx.count("dht", "humidity", "value").await, 1);
}

#[tokio::test]
async fn a_reading_sent_again_with_the_same_sensor_time_is_stored_once() {
    let influx = InfluxServer::start().await;
    let server = CoapServer::start(&influx.url(), &[], "/readyz").await;
    let c = RawClient::new(server.coap);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
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
