//! The client endpoint over DTLS, against a scripted server made of `iot_common::dtls` (the
//! pieces coap-server is built from) on loopback, and against libcoap's `coap-server-openssl`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType, Packet, RequestType, ResponseType};
use iot_common::dtls::{self, Listen, Session};
use openssl::ssl::{ErrorCode, SslContext};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::*;
use crate::deliver::{self, Next, TEMPERATURE};

const KEY: &str = "0123456789abcdef0123";
const OTHER_KEY: &str = "fedcba9876543210fedc";

/// Loopback timers: fast, yet with room for a handshake on a busy machine.
const TIMERS: Transmission = Transmission {
    ack_timeout: Duration::from_millis(100),
    ack_random_factor: 1.5,
    max_retransmit: 4,
};

const QUICK: HandshakePolicy = HandshakePolicy {
    timeout: Duration::from_secs(2),
    attempts: 2,
    backoff: Duration::from_millis(50),
    max_backoff: Duration::from_millis(200),
};

/// A POST the scripted server received.
#[derive(Clone, Debug)]
struct Seen {
    identity: String,
    mid: u16,
    payload: Vec<u8>,
    answered: bool,
}

/// A DTLS server on loopback: the stateless cookie exchange by `dtls::listen`, then one
/// session per peer, which answers every confirmable POST with a piggybacked 2.04.
struct ScriptedServer {
    addr: SocketAddr,
    /// The key of each identity it knows, changeable while it runs.
    keys: Arc<Mutex<HashMap<String, String>>>,
    /// Makes it forget every session, as a replaced server would.
    restart: mpsc::UnboundedSender<()>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    /// `restart_at`: instead of answering this POST (1-based), forget every session.
    async fn start(keys: &[(&str, &str)], restart_at: Option<usize>) -> Self {
        let keys: HashMap<String, String> = keys
            .iter()
            .map(|(i, k)| (i.to_string(), k.to_string()))
            .collect();
        let keys = Arc::new(Mutex::new(keys));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (restart, restarts) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ctx = server_context(keys.clone());
        let task = tokio::spawn(serve(socket, ctx, restarts, seen.clone(), restart_at));
        ScriptedServer {
            addr,
            keys,
            restart,
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn server_context(keys: Arc<Mutex<HashMap<String, String>>>) -> SslContext {
    let mut ctx = dtls::context_builder().unwrap();
    ctx.set_psk_server_callback(move |_, identity, psk| {
        let keys = keys.lock().unwrap();
        let key = identity
            .and_then(|i| std::str::from_utf8(i).ok())
            .and_then(|i| keys.get(i));
        match key {
            Some(key) => {
                psk[..key.len()].copy_from_slice(key.as_bytes());
                Ok(key.len())
            }
            // No key: OpenSSL ends the handshake with an unknown_psk_identity alert.
            None => Ok(0),
        }
    });
    ctx.set_cookie_generate_cb(|_, buf| {
        buf[..6].copy_from_slice(b"cookie");
        Ok(6)
    });
    ctx.set_cookie_verify_cb(|_, cookie| cookie == b"cookie");
    ctx.build()
}

async fn serve(
    socket: UdpSocket,
    ctx: SslContext,
    mut restarts: mpsc::UnboundedReceiver<()>,
    seen: Arc<Mutex<Vec<Seen>>>,
    restart_at: Option<usize>,
) {
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = tokio::select! {
            Some(()) = restarts.recv() => {
                sessions.clear();
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(got) => got,
                Err(_) => continue,
            },
        };
        let datagram = &buf[..n];
        // A ClientHello (epoch 0, handshake type 1) starts over, as RFC 6347 §4.2.8 says.
        let hello = datagram.first() == Some(&22)
            && datagram.get(3..5) == Some(&[0, 0])
            && datagram.get(13) == Some(&1);
        let mut out = Vec::new();
        let mut forget = false;
        match sessions.get_mut(&peer) {
            Some(session) if !hello => {
                session.get_mut().feed(datagram);
                if session.ssl().is_init_finished() {
                    forget = answer(session, &seen, restart_at);
                } else if let Err(e) = session.do_handshake()
                    && e.code() != ErrorCode::WANT_READ
                {
                    out = session.get_mut().take_outgoing();
                    sessions.remove(&peer);
                }
            }
            _ => {
                let mut session = dtls::session(&ctx).unwrap();
                session.get_mut().feed(datagram);
                if dtls::listen(&mut session).unwrap() == Listen::Verified {
                    let _ = session.accept();
                    sessions.insert(peer, session);
                } else {
                    out = session.get_mut().take_outgoing();
                }
            }
        }
        if let Some(session) = sessions.get_mut(&peer) {
            out.extend(session.get_mut().take_outgoing());
        }
        if forget {
            sessions.clear();
        }
        for d in out {
            let _ = socket.send_to(&d, peer).await;
        }
    }
}

/// Answers the POSTs in what was fed to `session`; true when the POST at `restart_at` came.
fn answer(session: &mut Session, seen: &Mutex<Vec<Seen>>, restart_at: Option<usize>) -> bool {
    let identity = String::from_utf8_lossy(session.ssl().psk_identity().unwrap_or_default());
    let identity = identity.into_owned();
    let mut plain = [0u8; 2048];
    while let Ok(n) = session.ssl_read(&mut plain) {
        let Ok(request) = Packet::from_bytes(&plain[..n]) else {
            continue;
        };
        if request.header.code != MessageClass::Request(RequestType::Post) {
            continue;
        }
        let mut seen = seen.lock().unwrap();
        let restart = restart_at == Some(seen.len() + 1);
        seen.push(Seen {
            identity: identity.clone(),
            mid: request.header.message_id,
            payload: request.payload.clone(),
            answered: !restart,
        });
        if restart {
            return true;
        }
        let mut reply = Packet::new();
        reply.header.set_type(MessageType::Acknowledgement);
        reply.header.message_id = request.header.message_id;
        reply.header.code = MessageClass::Response(ResponseType::Changed);
        reply.set_token(request.get_token().to_vec());
        reply.payload = b"stored".to_vec();
        session.ssl_write(&reply.to_bytes().unwrap()).unwrap();
    }
    false
}

fn device(identity: &str, key: KeySource) -> Option<Dtls> {
    Some(Dtls {
        credentials: Credentials {
            identity: identity.into(),
            key,
        },
        policy: QUICK,
    })
}

fn given(key: &str) -> KeySource {
    KeySource::Given(key.into())
}

fn post(value: f64) -> Request {
    deliver::reading(TEMPERATURE, value, Vec::new(), 1_764_000_000_000)
}

/// A client of `server` over DTLS as `dtls` says, and its stats.
async fn client_of(server: SocketAddr, dtls: Option<Dtls>) -> (Client, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let client = Client::connect(server, TIMERS, stats.clone(), dtls)
        .await
        .unwrap();
    (client, stats)
}

/// Bounds a test's time, whatever goes wrong.
async fn within<T>(secs: u64, test: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), test)
        .await
        .expect("the test's time bound")
}

#[tokio::test]
async fn readings_over_dtls_are_acknowledged_after_one_handshake() {
    within(20, async {
        let server = ScriptedServer::start(&[("sim-1", KEY)], None).await;
        let (client, stats) = client_of(server.addr, device("sim-1", given(KEY))).await;
        for value in [21.0, 21.5, 22.0] {
            let answer = client.request(post(value)).await.unwrap();
            assert_eq!(answer.code, ResponseType::Changed);
            assert_eq!(answer.payload, b"stored");
        }
        let seen = server.seen();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s.identity == "sim-1" && s.answered));
        assert_eq!(seen[1].payload, b"21.5");
        assert_eq!(
            (stats.handshakes.get(), stats.handshake_failures.get()),
            (1, 0)
        );
        assert_eq!(stats.retransmitted.get(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_wrong_key_fails_the_request_with_a_typed_error_in_bounded_time() {
    within(20, async {
        let server = ScriptedServer::start(&[("sim-1", KEY)], None).await;
        let (client, stats) = client_of(server.addr, device("sim-1", given(OTHER_KEY))).await;
        let started = Instant::now();
        let outcome = client.request(post(21.0)).await;
        // The server answers the ClientHello, then drops the Finished that the wrong key
        // protects (DTLS drops records that fail their check): no alert, no end.
        assert_eq!(
            outcome,
            Err(ExchangeError::Handshake(HandshakeError::Unfinished(
                QUICK.timeout
            )))
        );
        // Two attempts of 2 s and a pause of 50 ms between them.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(8),
            "{took:?}"
        );
        assert_eq!(
            (stats.handshakes.get(), stats.handshake_failures.get()),
            (0, 2)
        );
        assert!(server.seen().is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_unknown_identity_is_refused_with_an_alert() {
    within(20, async {
        let server = ScriptedServer::start(&[("sim-1", KEY)], None).await;
        let (client, stats) = client_of(server.addr, device("sim-9", given(KEY))).await;
        let started = Instant::now();
        match client.request(post(21.0)).await {
            Err(ExchangeError::Handshake(HandshakeError::Alert(reason))) => {
                assert!(reason.contains("unknown psk identity"), "{reason}");
            }
            other => panic!("expected an alert, got {other:?}"),
        }
        // An alert ends an attempt at once: no waiting for the handshake's time bound.
        assert!(started.elapsed() < QUICK.timeout, "{:?}", started.elapsed());
        assert_eq!(
            (stats.handshakes.get(), stats.handshake_failures.get()),
            (0, 2)
        );
    })
    .await;
}

/// Ten readings from each of `slots` slots, each sent again until stored, counted by
/// `deliver::next_step` as the load generator counts them.
struct Readings {
    left: Vec<u32>,
    sending: Vec<Option<Request>>,
    stats: Arc<Stats>,
    next_value: u32,
}

impl Readings {
    fn new(slots: usize, stats: Arc<Stats>) -> Self {
        Readings {
            left: vec![10; slots],
            sending: vec![None; slots],
            stats,
            next_value: 0,
        }
    }
}

impl Driver for Readings {
    fn slots(&self) -> usize {
        self.left.len()
    }

    fn next(&mut self, slot: usize, ended: Option<Result<Response, ExchangeError>>) -> Step {
        if let Some(outcome) = ended {
            match deliver::next_step(outcome, &self.stats) {
                Next::Stored => self.sending[slot] = None,
                Next::RetryAfter(_) | Next::Refused(_) => {
                    if let Some(again) = self.sending[slot].clone() {
                        return Step::Send(again);
                    }
                }
            }
        }
        if self.left[slot] == 0 {
            return Step::Done;
        }
        self.left[slot] -= 1;
        self.next_value += 1;
        // Distinct payloads: the server can tell the readings apart.
        let request = post(f64::from(self.next_value) / 10.0);
        self.sending[slot] = Some(request.clone());
        Step::Send(request)
    }
}

#[tokio::test]
async fn after_a_server_restart_the_client_handshakes_again_and_every_reading_counts_once() {
    within(30, async {
        // The server forgets every session when the 10th reading comes, unanswered: a
        // replaced coap-server pod, which drops the records of sessions it does not know.
        let server = ScriptedServer::start(&[("sim-1", KEY)], Some(10)).await;
        let stats = Arc::new(Stats::default());
        let driver = Box::new(Readings::new(3, stats.clone()));
        drive(
            server.addr,
            TIMERS,
            stats.clone(),
            driver,
            device("sim-1", given(KEY)),
            SourcePort::Kept,
        )
        .await
        .unwrap();
        assert_eq!(stats.acked.get(), 30, "every reading acknowledged once");
        assert_eq!(stats.sent.get(), 30, "no reading sent as a new exchange");
        assert_eq!((stats.failed.get(), stats.timeouts.get()), (0, 0));
        assert_eq!(
            (stats.handshakes.get(), stats.handshake_failures.get()),
            (2, 0)
        );
        let seen = server.seen();
        let lost = seen
            .iter()
            .find(|s| !s.answered)
            .expect("the reading at the restart");
        // It came again over the new session with its message ID (and was answered): a
        // server that deduplicates by identity, message ID and content knows it.
        let again: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.mid == lost.mid && s.answered)
            .collect();
        assert_eq!(again.len(), 1, "{seen:?}");
        assert_eq!(again[0].payload, lost.payload);
        let mut answered: Vec<u16> = seen.iter().filter(|s| s.answered).map(|s| s.mid).collect();
        answered.sort_unstable();
        answered.dedup();
        assert_eq!(answered.len(), 30);
    })
    .await;
}

#[tokio::test]
async fn a_key_file_rotated_on_disk_is_used_from_the_next_handshake() {
    within(30, async {
        let keys = tempfile::tempdir().unwrap();
        let write_key = |key: &str| std::fs::write(keys.path().join("sim-1"), format!("{key}\n"));
        write_key(KEY).unwrap();
        let server = ScriptedServer::start(&[("sim-1", KEY)], None).await;
        let dir = KeySource::Dir(keys.path().to_path_buf());
        let (client, stats) = client_of(server.addr, device("sim-1", dir)).await;
        assert!(client.request(post(21.0)).await.is_ok());
        // The key is rotated: kubelet rewrites the file, the server knows only the new key
        // and has no session any more.
        write_key(OTHER_KEY).unwrap();
        server
            .keys
            .lock()
            .unwrap()
            .insert("sim-1".into(), OTHER_KEY.into());
        server.restart.send(()).unwrap();
        assert!(client.request(post(21.5)).await.is_ok());
        assert_eq!(
            (stats.handshakes.get(), stats.handshake_failures.get()),
            (2, 0)
        );
        assert_eq!(server.seen().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_sensor_whose_key_file_is_missing_waits_for_it() {
    within(20, async {
        let keys = tempfile::tempdir().unwrap();
        let server = ScriptedServer::start(&[("sim-1", KEY)], None).await;
        let mut patient = device("sim-1", KeySource::Dir(keys.path().to_path_buf()));
        if let Some(d) = patient.as_mut() {
            d.policy.attempts = 100;
        }
        let (client, stats) = client_of(server.addr, patient).await;
        let sent = tokio::spawn(async move { client.request(post(21.0)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(keys.path().join("sim-1"), KEY).unwrap();
        assert!(sent.await.unwrap().is_ok());
        assert_eq!(stats.handshakes.get(), 1);
        assert!(stats.handshake_failures.get() >= 2);
    })
    .await;
}

/// libcoap's server, on ports of its own on loopback; killed (this process only) when dropped.
struct Libcoap {
    child: std::process::Child,
    dtls_port: u16,
}

impl Drop for Libcoap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port `p` where `p` and `p + 1` are free for UDP and TCP on loopback: libcoap's server
/// takes both (plain on `p`, DTLS and TLS on `p + 1`).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let Ok(first) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port == u16::MAX {
            continue;
        }
        let free = std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no two free ports in a row on 127.0.0.1");
}

fn libcoap_server(key: &str) -> Libcoap {
    let path = "/usr/bin/coap-server-openssl";
    assert!(
        Path::new(path).exists(),
        "libcoap's coap-server-openssl is missing (Debian package libcoap3-bin)"
    );
    let port = free_port_pair();
    let child = std::process::Command::new(path)
        .args([
            "-A",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-k",
            key,
            "-d",
            "10",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start coap-server-openssl");
    Libcoap {
        child,
        dtls_port: port + 1,
    }
}

#[tokio::test]
async fn the_handshake_and_a_post_work_against_libcoaps_coap_server() {
    let server = libcoap_server(KEY);
    within(30, async {
        let addr: SocketAddr = ([127, 0, 0, 1], server.dtls_port).into();
        // If the server is not listening yet, OpenSSL sends its ClientHello again after 1 s.
        let mut patient = device("sim-1", given(KEY));
        if let Some(d) = patient.as_mut() {
            d.policy.timeout = Duration::from_secs(5);
            d.policy.attempts = 4;
        }
        let (client, stats) = client_of(addr, patient).await;
        // `-d` lets a POST create the resource (2.01), and later ones change it (2.04).
        let first = client.request(post(21.0)).await.unwrap();
        assert_eq!(first.code, ResponseType::Created, "{first:?}");
        let second = client.request(post(21.5)).await.unwrap();
        assert_eq!(second.code, ResponseType::Changed, "{second:?}");
        assert_eq!(stats.handshakes.get(), 1);
    })
    .await;
}
