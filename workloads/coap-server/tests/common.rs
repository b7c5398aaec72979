//! Helpers of the coap-server integration tests: the server binary on free ports, a raw CoAP
//! client socket, and the readiness/metrics endpoints.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use iot_testkit::influx::{free_port, free_udp_port};

pub struct CoapServer {
    child: Child,
    pub coap: SocketAddr,
    pub http: SocketAddr,
}

impl CoapServer {
    /// Starts coap-server against `influx_url`; waits until it is ready when `wait_ready`.
    /// A port taken between our probe and the server's bind is retried with new ports.
    pub async fn start(influx_url: &str, extra: &[&str], wait_ready: bool) -> Self {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(influx_url, extra, wait_ready).await {
                return server;
            }
        }
        panic!("coap-server did not start (see its log above)");
    }

    async fn try_start(influx_url: &str, extra: &[&str], wait_ready: bool) -> Option<Self> {
        let coap: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = Command::new(env!("CARGO_BIN_EXE_coap-server"))
            .args([
                "--bind",
                &coap.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .args(["--influx-url", influx_url, "--influx-db", "dht"])
            .args(["--retry-after-seconds", "1"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn coap-server");
        let mut server = CoapServer { child, coap, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        let path = if wait_ready { "/readyz" } else { "/healthz" };
        while server.http_status(path).await != Some(200) {
            if server.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "coap-server did not become {path}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(server)
    }

    pub async fn http_status(&self, path: &str) -> Option<u16> {
        reqwest::get(format!("http://{}{path}", self.http))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait coap-server");
        std::mem::forget(self);
        status
    }
}

impl Drop for CoapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw CoAP endpoint for precise tests.
pub struct RawClient {
    pub socket: UdpSocket,
}

impl RawClient {
    pub fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        socket.connect(server).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        RawClient { socket }
    }

    pub fn send(&self, bytes: &[u8]) {
        self.socket.send(bytes).expect("send");
    }

    /// The next datagram, or None within `wait`.
    pub fn recv_within(&self, wait: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 2048];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    pub fn recv(&self) -> Packet {
        let bytes = self
            .recv_within(Duration::from_secs(5))
            .expect("an answer within 5 s");
        Packet::from_bytes(&bytes).expect("answer is CoAP")
    }

    /// Sends `packet` and returns the answer.
    pub fn exchange(&self, packet: &Packet) -> Packet {
        self.send(&packet.to_bytes().expect("encode"));
        self.recv()
    }
}

pub fn request(
    kind: MessageType,
    method: RequestType,
    mid: u16,
    path: &str,
    query: &[&str],
    payload: &[u8],
) -> Packet {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(kind);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(mid.to_be_bytes().to_vec());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for q in query {
        p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    p
}

pub fn post(mid: u16, path: &str, payload: &str) -> Packet {
    request(
        MessageType::Confirmable,
        RequestType::Post,
        mid,
        path,
        &[],
        payload.as_bytes(),
    )
}

pub fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(c) => c,
        other => panic!("not a response: {other:?}"),
    }
}

pub fn text(p: &Packet) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// Polls until `f` returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
