//! coap-server's CoAP behaviour, in-process against an in-memory sink: answers, retransmissions,
//! bad input, a sink that is away or refuses part of a batch, and interoperability with
//! libcoap's coap-client. What InfluxDB itself does is tested in `influxdb.rs`.

mod in_process;

use std::process::Command;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageType, Packet, RequestType, ResponseType};
use coap_server::Config;
use in_process::{FakeSink, InProcess, config, metric};
use iot_common::BatchConfig;
use iot_testkit::coap::{RawClient, code, post, request, text};

const TEMPERATURE: &str = "/sensors/dht/temperature";
const HUMIDITY: &str = "/sensors/dht/humidity";

/// A server whose writes take `delay`, so that a reading stays pending meanwhile.
fn slow(delay: Duration, config: Config) -> InProcess {
    let sink = FakeSink::default();
    sink.delay(delay);
    InProcess::start_with(sink, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmable_reading_is_acknowledged_once_stored_with_its_tags() {
    const WRITE: Duration = Duration::from_millis(300);
    let server = slow(WRITE, config());
    let client = RawClient::new(server.coap);
    let req = request(
        MessageType::Confirmable,
        RequestType::Post,
        100,
        HUMIDITY,
        &["place=lab", "sensor=dht-9"],
        b"41.9",
    );
    let sent = Instant::now();
    let ack = client.exchange(&req);
    assert!(sent.elapsed() >= WRITE, "acknowledged before it was stored");
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.message_id, 100);
    assert_eq!(ack.get_token(), req.get_token());
    assert_eq!(code(&ack), ResponseType::Changed);
    assert_eq!(text(&ack), "Humidity=41.9 saved successfully!");
    let lines = server.sink.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("humidity,place=lab,sensor=dht-9 value=41.9 "),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_request_is_answered_again_but_stored_once() {
    // A slow write holds the first one pending long enough to see its retransmissions.
    let server = slow(Duration::from_millis(300), config());
    let client = RawClient::new(server.coap);
    let bytes = post(7, TEMPERATURE, "21.5").to_bytes().unwrap();
    // Twice while the first is still being written, and once after it was answered.
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
    assert_eq!(server.sink.count("temperature"), 2);
    assert_eq!(server.sink.writes(), 2);
    assert_eq!(metric(&server.metrics(), "coap_duplicates_total"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_of_bad_input_gets_a_precise_answer_and_nothing_is_stored() {
    use ResponseType::{
        BadOption, BadRequest, MethodNotAllowed, NotFound, UnsupportedContentFormat,
    };
    let server = InProcess::start(config());
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
    let mut cases: Vec<(Packet, ResponseType, &str)> = posts
        .into_iter()
        .zip(1..)
        .map(|((path, body, want, words), id)| (post(id, path, body), want, words))
        .collect();
    let con = MessageType::Confirmable;
    let get = request(con, RequestType::Get, 8, TEMPERATURE, &[], b"");
    cases.push((get, MethodNotAllowed, "takes POST or PUT"));
    let query = request(con, RequestType::Post, 9, TEMPERATURE, &["room=1"], b"20");
    cases.push((query, BadRequest, "unknown query parameter"));
    let mut critical = post(12, TEMPERATURE, "20");
    critical.add_option(CoapOption::Unknown(2049), vec![1]);
    cases.push((critical, BadOption, "critical option 2049"));
    let mut json = post(13, TEMPERATURE, "20");
    json.add_option(CoapOption::ContentFormat, vec![50]);
    cases.push((json, UnsupportedContentFormat, "text/plain"));
    for (req, want, words) in &cases {
        let ans = c.exchange(req);
        assert_eq!(code(&ans), *want, "{words}");
        assert!(
            text(&ans).contains(words),
            "{:?} lacks {words:?}",
            text(&ans)
        );
        assert_eq!(ans.header.get_type(), MessageType::Acknowledgement);
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
    c.send(&[0x50, 0x02, 0x00, 0x02, 0xd0]); // NON with a broken option: no RST
    assert!(c.recv_within(Duration::from_millis(300)).is_none());
    // A CoAP ping gets RST.
    c.send(&[0x40, 0x00, 0x00, 0x2a]);
    assert_eq!(
        c.recv_within(Duration::from_secs(10)).expect("RST"),
        vec![0x70, 0x00, 0x00, 0x2a]
    );

    // The server still works and stored nothing of the above.
    assert_eq!(
        code(&c.exchange(&post(11, TEMPERATURE, "20.0"))),
        ResponseType::Changed
    );
    assert_eq!(server.sink.lines().len(), 1);
    let metrics = server.metrics();
    assert!(
        metrics.contains(r#"coap_requests_rejected_total{reason="out_of_range"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"coap_malformed_total{reason="format"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_list_and_non_confirmable_readings_are_answered() {
    let server = InProcess::start(config());
    let c = RawClient::new(server.coap);
    let con = MessageType::Confirmable;
    let list = c.exchange(&request(
        con,
        RequestType::Get,
        1,
        "/.well-known/core",
        &[],
        b"",
    ));
    assert_eq!(code(&list), ResponseType::Content);
    let format = list
        .get_first_option(CoapOption::ContentFormat)
        .expect("Content-Format");
    assert_eq!(format, &vec![40u8], "application/link-format");
    assert!(text(&list).contains("</sensors/dht/temperature>"));
    assert!(text(&list).contains("</sensors/dht/humidity>"));
    let non = request(
        MessageType::NonConfirmable,
        RequestType::Put,
        2,
        TEMPERATURE,
        &["place=hall"],
        b"19.5",
    );
    let ans = c.exchange(&non);
    assert_eq!(ans.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(ans.get_token(), non.get_token());
    assert_eq!(code(&ans), ResponseType::Changed);
    assert_eq!(server.sink.count("temperature,place=hall value=19.5 "), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_sink_is_away_readings_get_5_03_with_max_age_and_are_stored_when_back() {
    let server = InProcess::start(config());
    server.sink.away(true);
    let c = RawClient::new(server.coap);
    let ans = c.exchange(&post(1, TEMPERATURE, "20.0"));
    assert_eq!(code(&ans), ResponseType::ServiceUnavailable);
    let max_age = ans.get_first_option(CoapOption::MaxAge).expect("Max-Age");
    assert_eq!(max_age, &vec![1u8]);
    assert!(text(&ans).contains("try again in 1 s"));
    // Sent again within the exchange's lifetime, it is answered from the dedup cache.
    assert_eq!(
        code(&c.exchange(&post(1, TEMPERATURE, "20.0"))),
        ResponseType::ServiceUnavailable
    );

    server.sink.away(false);
    assert_eq!(
        code(&c.exchange(&post(2, TEMPERATURE, "20.0"))),
        ResponseType::Changed
    );
    assert_eq!(server.sink.lines().len(), 1);
    let metrics = server.metrics();
    assert!(
        metrics.contains(r#"coap_readings_unavailable_total{reason="server"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stored_in_part_is_answered_per_reading() {
    const READINGS: u16 = 40;
    let sink = FakeSink::default();
    sink.refuse("place=bad");
    // A fixed linger puts every reading into one batch.
    let batch = BatchConfig {
        linger: Duration::from_millis(200),
        fixed_linger: true,
        ..config().batch
    };
    let server = InProcess::start_with(sink, Config { batch, ..config() });
    let c = RawClient::new(server.coap);
    let is_bad = |mid: u16| mid % 10 == 3;
    let reading = |mid: u16| {
        let place = if is_bad(mid) {
            "place=bad"
        } else {
            "place=good"
        };
        request(
            MessageType::Confirmable,
            RequestType::Post,
            mid,
            TEMPERATURE,
            &[place],
            b"20",
        )
    };
    for mid in 0..READINGS {
        c.send(&reading(mid).to_bytes().unwrap());
    }
    let mut answered = vec![0; usize::from(READINGS)];
    // Until every reading is answered, and a little longer to see no reading answered twice.
    let mut quiet = Duration::from_secs(10);
    while let Some(bytes) = c.recv_within(quiet) {
        let ans = Packet::from_bytes(&bytes).expect("CoAP");
        let mid = ans.header.message_id;
        answered[usize::from(mid)] += 1;
        if is_bad(mid) {
            assert_eq!(code(&ans), ResponseType::BadRequest);
            assert!(
                text(&ans).contains("refused by the fake sink"),
                "{}",
                text(&ans)
            );
            assert!(!text(&ans).contains("dropped="), "{}", text(&ans));
        } else {
            assert_eq!(code(&ans), ResponseType::Changed, "{}", text(&ans));
        }
        if answered.iter().all(|&n| n > 0) {
            quiet = Duration::from_millis(200);
        }
    }
    assert!(answered.iter().all(|&n| n == 1), "{answered:?}");
    assert_eq!(server.sink.count("place=good"), usize::from(READINGS) - 4);
    // A refused reading sent again is refused again, without a write.
    let writes = server.sink.writes();
    assert_eq!(code(&c.exchange(&reading(3))), ResponseType::BadRequest);
    assert_eq!(server.sink.writes(), writes);
    let metrics = server.metrics();
    let rewrites = metric(&metrics, "influx_partial_rewrites_total");
    // Found by writing halves again: a few writes per refused reading (two per halving).
    assert!(rewrites > 0 && rewrites <= 4 * 2 * 6, "{rewrites}");
    assert!(
        metrics.contains(r#"coap_requests_rejected_total{reason="influx_refused"} 4"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sheds_load_with_5_03() {
    // One write at a time, one reading per write, and room for one more: the rest is shed.
    let batch = BatchConfig {
        max_points: 1,
        max_in_flight: 1,
        queue_capacity: 1,
        ..config().batch
    };
    let server = slow(Duration::from_millis(200), Config { batch, ..config() });
    let c = RawClient::new(server.coap);
    for mid in 0..10 {
        c.send(&post(mid, TEMPERATURE, "20").to_bytes().unwrap());
    }
    let mut codes = Vec::new();
    while codes.len() < 10
        && let Some(bytes) = c.recv_within(Duration::from_secs(10))
    {
        codes.push(code(&Packet::from_bytes(&bytes).expect("CoAP")));
    }
    let shed = codes
        .iter()
        .filter(|&&c| c == ResponseType::ServiceUnavailable)
        .count();
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert!(shed >= 7, "{codes:?}");
    assert_eq!(server.sink.lines().len(), 10 - shed);
    assert!(
        server.metrics().contains(&format!(
            r#"coap_readings_unavailable_total{{reason="queue_full"}} {shed}"#
        )),
        "{}",
        server.metrics()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_writes_and_answers_the_queued_readings() {
    // A fixed linger keeps the readings queued until the server stops.
    let batch = BatchConfig {
        linger: Duration::from_secs(3600),
        fixed_linger: true,
        ..config().batch
    };
    let server = InProcess::start(Config { batch, ..config() });
    let c = RawClient::new(server.coap);
    for mid in 0..5u16 {
        c.send(&post(mid, TEMPERATURE, "20.0").to_bytes().unwrap());
    }
    assert!(c.recv_within(Duration::from_millis(300)).is_none());
    let sink = server.sink.clone();
    assert!(server.stop().await, "drained in time");
    let answers = (0..5)
        .filter_map(|_| c.recv_within(Duration::from_secs(10)))
        .count();
    assert_eq!(answers, 5);
    assert_eq!(sink.lines().len(), 5);
}

fn coap_client() -> &'static str {
    let p = "/usr/bin/coap-client-notls";
    assert!(
        std::path::Path::new(p).exists(),
        "libcoap's coap-client is missing: run `make deps` (Debian package libcoap3-bin)"
    );
    p
}

/// Runs libcoap's coap-client off the runtime's threads; what it printed, both streams.
async fn run_coap_client(args: Vec<String>) -> (bool, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(coap_client())
            .args(["-B", "5"])
            .args(&args)
            .output()
            .expect("run coap-client")
    })
    .await
    .expect("coap-client task");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_coap_client_can_discover_and_post_readings() {
    let server = InProcess::start(config());
    let base = format!("coap://127.0.0.1:{}", server.coap.port());
    let run = |args: &[&str], url: String| {
        let mut args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        args.push(url);
        run_coap_client(args)
    };
    let (ok, core) = run(&["-m", "get"], format!("{base}/.well-known/core")).await;
    assert!(ok, "{core}");
    assert!(core.contains("</sensors/dht/temperature>"), "{core}");
    assert!(core.contains("</sensors/dht/humidity>"), "{core}");
    let url = format!("{base}{TEMPERATURE}?place=kitchen");
    let (ok, stored) = run(&["-m", "post", "-e", "25.5"], url).await;
    assert!(
        ok && stored.contains("Temperature=25.5 saved successfully!"),
        "{stored}"
    );
    let (ok, stored) = run(&["-m", "put", "-e", "55"], format!("{base}{HUMIDITY}")).await;
    assert!(
        ok && stored.contains("Humidity=55 saved successfully!"),
        "{stored}"
    );
    assert_eq!(
        server.sink.count("temperature,place=kitchen value=25.5 "),
        1
    );
    assert_eq!(server.sink.count("humidity,place=room1 value=55 "), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_coap_client_is_told_why_a_reading_is_refused() {
    let server = InProcess::start(Config {
        retention_ms: Some(3_600_000),
        ..config()
    });
    let old = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        - 2 * 3_600_000;
    let url = format!(
        "coap://127.0.0.1:{}{TEMPERATURE}?sensor=old&ts={old}",
        server.coap.port()
    );
    let args = ["-m", "post", "-e", "21.5"].map(String::from).to_vec();
    let (_, said) = run_coap_client([args, vec![url]].concat()).await;
    assert!(said.contains("4.00"), "{said}");
    assert!(said.contains("older than the database keeps"), "{said}");
    assert!(server.sink.lines().is_empty());
    assert_eq!(server.sink.writes(), 0);
}
