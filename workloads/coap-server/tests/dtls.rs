//! `coaps://`: registered devices over DTLS 1.2 with pre-shared keys, in-process against an
//! in-memory sink. The independent peer is libcoap's `coap-client-openssl`; the precise cases
//! (a flood of ClientHellos, a forged record, a retransmission after a new handshake) use the
//! testkit's DTLS endpoint. Every case counts what was stored.

mod in_process;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use coap_lite::{MessageType, Packet, RequestType, ResponseType};
use coap_server::devices::parse_file;
use coap_server::{Config, Devices, DtlsConfig, DtlsLimits};
use in_process::{FakeSink, InProcess, config, family_sum, metric};
use iot_testkit::coap::{code, request, text};
use iot_testkit::dtls::DtlsClient;

const TEMPERATURE: &str = "/sensors/dht/temperature";
const KEY_1: &str = "kitchen-sensor-key-0123456789abc";
const KEY_2: &str = "lab-sensor-key-0123456789abcdefg";
const WAIT: Duration = Duration::from_secs(10);

fn registry(text: &str) -> coap_server::devices::Registry {
    parse_file(text).expect("a valid devices file")
}

fn two_devices() -> String {
    format!("dht-1 kitchen {KEY_1}\ndht-2 lab {KEY_2}\n")
}

/// A server with DTLS for `devices` and plaintext closed, as a deployment runs it.
fn secure_server(devices: &Devices) -> InProcess {
    secure_server_with(devices, DtlsLimits::default(), FakeSink::default())
}

fn secure_server_with(devices: &Devices, limits: DtlsLimits, sink: FakeSink) -> InProcess {
    InProcess::start_with(
        sink,
        Config {
            plaintext: false,
            dtls: Some(DtlsConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                devices: devices.clone(),
                limits,
            }),
            ..config()
        },
    )
}

fn reading(mid: u16, query: &[&str], value: &str) -> Packet {
    request(
        MessageType::Confirmable,
        RequestType::Post,
        mid,
        TEMPERATURE,
        query,
        value.as_bytes(),
    )
}

fn connect(server: &InProcess, identity: &str, key: &str) -> DtlsClient {
    DtlsClient::connect(
        server.coaps.expect("DTLS on"),
        identity,
        key.as_bytes(),
        WAIT,
    )
    .expect("handshake")
}

/// libcoap's client: its exit status, and what it printed.
fn coap_client_openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("coap-client-openssl")
        .args(["-B", "4"])
        .args(args)
        .output()
        .expect("coap-client-openssl (Debian's libcoap3-bin) is installed");
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

fn uri(server: &InProcess, scheme: &str, port: u16, query: &str) -> String {
    let ip = server.coaps.expect("DTLS on").ip();
    format!("{scheme}://{ip}:{port}{TEMPERATURE}{query}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_stores_as_its_device_with_the_right_key_and_nothing_otherwise() {
    let devices = Devices::new(registry(&two_devices()));
    let server = secure_server(&devices);
    let port = server.coaps.expect("DTLS on").port();
    let coaps = uri(&server, "coaps", port, "");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            coap_client_openssl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let post = |user: &str, key: &str, uri: &str, value: &str| {
        ["-u", user, "-k", key, "-m", "post", "-e", value, uri]
            .map(String::from)
            .to_vec()
    };

    let (ok, printed) = run(post("dht-1", KEY_1, &coaps, "21.5")).await.unwrap();
    assert!(ok && printed.contains("21.5"), "right key: {printed}");
    assert_eq!(
        server.sink.count("place=kitchen,sensor=dht-1 value=21.5"),
        1
    );

    let bad = [
        ("a wrong key", post("dht-1", KEY_2, &coaps, "30.1")),
        ("an unknown identity", post("dht-9", KEY_1, &coaps, "30.2")),
        (
            "plaintext to the DTLS port",
            ["-m", "post", "-e", "30.3", &uri(&server, "coap", port, "")]
                .map(String::from)
                .to_vec(),
        ),
    ];
    for (what, args) in bad {
        let (_, printed) = run(args).await.unwrap();
        assert!(!printed.contains("2.04"), "{what}: {printed}");
    }
    assert_eq!(
        server.sink.count("value=30."),
        0,
        "nothing stored from a bad client"
    );
    assert_eq!(server.sink.lines().len(), 1);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_closed_when_devices_are_registered() {
    let devices = Devices::new(registry(&two_devices()));
    let server = secure_server(&devices);
    assert_eq!(server.coap.port(), 0, "no plaintext socket bound");
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_writes_as_itself_and_a_forged_tag_gets_4_03() {
    let devices = Devices::new(registry(&two_devices()));
    let server = secure_server(&devices);
    let mut device = tokio::task::block_in_place(|| connect(&server, "dht-1", KEY_1));
    let cases: [(&[&str], ResponseType); 6] = [
        (&[], ResponseType::Changed),
        (&["sensor=dht-1", "place=kitchen"], ResponseType::Changed),
        (&["sensor=dht-2"], ResponseType::Forbidden),
        (&["place=lab"], ResponseType::Forbidden),
        (&["sensor=dht-1", "place=lab"], ResponseType::Forbidden),
        (&["sensor=intruder"], ResponseType::Forbidden),
    ];
    for (i, (query, expected)) in cases.iter().enumerate() {
        let value = format!("2{i}.5");
        let answer = tokio::task::block_in_place(|| {
            device.exchange(&reading(100 + i as u16, query, &value))
        });
        assert_eq!(code(&answer), *expected, "{query:?}: {}", text(&answer));
        if *expected == ResponseType::Forbidden {
            assert!(text(&answer).contains("sensor=dht-1 place=kitchen"));
        }
    }
    let lines = server.sink.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("place=kitchen,sensor=dht-1 "))
    );
    let metrics = server.metrics();
    assert_eq!(metric(&metrics, "coap_device_tags_refused_total"), 4);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_and_rekeying_take_effect_on_a_running_server() {
    let devices = Devices::new(registry(&two_devices()));
    let server = secure_server(&devices);
    let coaps = server.coaps.expect("DTLS on");
    tokio::task::block_in_place(|| {
        let mut one = connect(&server, "dht-1", KEY_1);
        let mut two = connect(&server, "dht-2", KEY_2);
        assert_eq!(
            code(&one.exchange(&reading(1, &[], "20.1"))),
            ResponseType::Changed
        );
        assert_eq!(
            code(&two.exchange(&reading(1, &[], "20.2"))),
            ResponseType::Changed
        );

        // dht-1 removed, dht-2 given a new key.
        let new_key = "lab-sensor-rotated-key-987654321";
        devices.replace(registry(&format!("dht-2 lab {new_key}\n")));
        let short = Duration::from_secs(2);
        assert!(
            one.exchange_within(&reading(2, &[], "20.3"), short)
                .is_none(),
            "revoked"
        );
        assert!(
            two.exchange_within(&reading(2, &[], "20.4"), short)
                .is_none(),
            "re-keyed"
        );
        assert!(DtlsClient::connect(coaps, "dht-1", KEY_1.as_bytes(), short).is_err());
        assert!(DtlsClient::connect(coaps, "dht-2", KEY_2.as_bytes(), short).is_err());
        let mut rotated = connect(&server, "dht-2", new_key);
        assert_eq!(
            code(&rotated.exchange(&reading(3, &[], "20.5"))),
            ResponseType::Changed
        );
    });
    assert_eq!(server.sink.lines().len(), 3, "{:?}", server.sink.lines());
    assert_eq!(
        server.sink.count("value=20.3") + server.sink.count("value=20.4"),
        0
    );
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmission_over_a_new_session_is_answered_and_stored_once() {
    let devices = Devices::new(registry(&two_devices()));
    let server = secure_server(&devices);
    let ts = format!("ts={}", now_ms());
    tokio::task::block_in_place(|| {
        let mut first = connect(&server, "dht-1", KEY_1);
        let answer = first.exchange(&reading(7, &[&ts], "22.2"));
        assert_eq!(code(&answer), ResponseType::Changed);
        // The device lost its session (a reboot, a new port) and sends the same request again.
        let mut second = connect(&server, "dht-1", KEY_1);
        assert_ne!(first.local_addr(), second.local_addr());
        let again = second.exchange(&reading(7, &[&ts], "22.2"));
        assert_eq!(code(&again), ResponseType::Changed);
    });
    assert_eq!(server.sink.count("value=22.2"), 1);
    assert_eq!(metric(&server.metrics(), "coap_duplicates_total"), 1);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_flood_costs_a_device_beside_it_nothing() {
    const HELLOS: usize = 10_000;
    const READINGS: u16 = 200;
    let devices = Devices::new(registry(&two_devices()));
    let limits = DtlsLimits {
        handshakes_per_ip: 4,
        ..DtlsLimits::default()
    };
    let server = secure_server_with(&devices, limits, FakeSink::default());
    let coaps = server.coaps.expect("DTLS on");
    let flood = std::thread::spawn(move || {
        // Complete ClientHellos without a cookie, from one peer on many ports; each gets a
        // stateless HelloVerifyRequest. A few peers answer it, and stop there (half-open).
        let started = Instant::now();
        let mut answered = 0;
        for i in 0..HELLOS {
            let socket = std::net::UdpSocket::bind("127.0.0.2:0").expect("bind");
            socket.connect(coaps).expect("connect");
            let mut session = iot_common::dtls::session(&half_open_context()).expect("session");
            let _ = session.connect();
            for d in session.get_mut().take_outgoing() {
                let _ = socket.send(&d);
            }
            if i % 500 == 0 {
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .ok();
                let mut buf = [0u8; 512];
                if let Ok(n) = socket.recv(&mut buf) {
                    answered += 1;
                    session.get_mut().feed(&buf[..n]);
                    let _ = session.do_handshake();
                    for d in session.get_mut().take_outgoing() {
                        let _ = socket.send(&d);
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        answered
    });
    let stored = tokio::task::block_in_place(|| {
        let mut device = connect(&server, "dht-2", KEY_2);
        let mut acknowledged = 0;
        for mid in 0..READINGS {
            let packet = reading(mid, &[], &format!("20.{mid}"));
            // Retransmit as RFC 7252 says until the answer comes (bounded).
            for _ in 0..5 {
                if let Some(a) = device.exchange_within(&packet, Duration::from_secs(2)) {
                    assert_eq!(code(&a), ResponseType::Changed);
                    acknowledged += 1;
                    break;
                }
            }
        }
        acknowledged
    });
    let answered = flood.join().expect("flood");
    assert!(
        answered > 0,
        "the flood's ClientHellos were answered (statelessly)"
    );
    assert_eq!(stored, READINGS as usize, "every reading acknowledged");
    assert_eq!(
        server.sink.count("sensor=dht-2"),
        READINGS as usize,
        "stored once each"
    );
    let metrics = server.metrics();
    assert!(metric(&metrics, "coap_dtls_hello_verify_total") >= HELLOS as u64 / 2);
    assert!(
        metric(&metrics, "coap_dtls_handshakes_in_progress") <= 4,
        "handshakes past the cookie are bounded per address"
    );
    assert!(server.stop().await);
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

/// A client context whose handshakes never finish: it knows no key.
fn half_open_context() -> openssl::ssl::SslContext {
    let mut ctx = iot_common::dtls::context_builder().expect("context");
    ctx.set_psk_client_callback(|_, _, id, _| {
        id[..6].copy_from_slice(b"nobody");
        id[6] = 0;
        Ok(0)
    });
    ctx.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dropped_without_harm() {
    let devices = Devices::new(registry(&two_devices()));
    let server = secure_server(&devices);
    tokio::task::block_in_place(|| {
        let mut device = connect(&server, "dht-1", KEY_1);
        let garbage: [&[u8]; 5] = [
            b"",
            &[0x17],
            // An application-data record of epoch 1 with a bad tag.
            &[
                0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                12, 13, 14, 15, 16,
            ],
            // A handshake record claiming more bytes than it has.
            &[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 1],
            &[0xff; 1500],
        ];
        for bytes in garbage {
            device.send_raw(bytes);
        }
        let answer = device.exchange(&reading(1, &[], "23.4"));
        assert_eq!(code(&answer), ResponseType::Changed);
    });
    assert_eq!(server.sink.lines().len(), 1);
    assert_eq!(
        family_sum(&server.metrics(), "coap_dtls_handshakes_total"),
        1
    );
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_per_device_and_in_all() {
    let devices = Devices::new(registry(&two_devices()));
    let limits = DtlsLimits {
        sessions_per_device: 2,
        ..DtlsLimits::default()
    };
    let server = secure_server_with(&devices, limits, FakeSink::default());
    tokio::task::block_in_place(|| {
        let mut sessions: Vec<DtlsClient> =
            (0..4).map(|_| connect(&server, "dht-1", KEY_1)).collect();
        // The two newest are kept; the oldest are gone.
        let short = Duration::from_secs(1);
        for (i, s) in sessions.iter_mut().enumerate() {
            let answer = s.exchange_within(&reading(i as u16, &[], &format!("1{i}.0")), short);
            assert_eq!(answer.is_some(), i >= 2, "session {i}");
        }
    });
    assert_eq!(metric(&server.metrics(), "coap_dtls_sessions"), 2);
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_table_makes_room_by_dropping_the_quietest() {
    let devices = Devices::new(registry(&format!("{}dht-3 hall {KEY_1}\n", two_devices())));
    let limits = DtlsLimits {
        sessions: 2,
        ..DtlsLimits::default()
    };
    let server = secure_server_with(&devices, limits, FakeSink::default());
    tokio::task::block_in_place(|| {
        let mut one = connect(&server, "dht-1", KEY_1);
        let mut two = connect(&server, "dht-2", KEY_2);
        // dht-2 is active, dht-1 quiet; dht-3 arrives and dht-1 makes room.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            code(&two.exchange(&reading(1, &[], "11.0"))),
            ResponseType::Changed
        );
        let mut three = connect(&server, "dht-3", KEY_1);
        let short = Duration::from_secs(1);
        assert!(
            one.exchange_within(&reading(2, &[], "11.1"), short)
                .is_none(),
            "evicted"
        );
        assert!(
            two.exchange_within(&reading(3, &[], "11.2"), short)
                .is_some()
        );
        assert!(
            three
                .exchange_within(&reading(4, &[], "11.3"), short)
                .is_some()
        );
        // The evicted device handshakes again and is served.
        let mut again = connect(&server, "dht-1", KEY_1);
        assert_eq!(
            code(&again.exchange(&reading(5, &[], "11.4"))),
            ResponseType::Changed
        );
    });
    let metrics = server.metrics();
    assert_eq!(metric(&metrics, "coap_dtls_sessions"), 2);
    assert_eq!(metric(&metrics, "coap_dtls_sessions_evicted_total"), 2);
    assert!(server.stop().await);
}
