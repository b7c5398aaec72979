//! A raw CoAP endpoint (RFC 7252) for precise tests of coap-server: every byte of a request is
//! the test's to choose, and every answer is returned as it came.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};

/// A raw CoAP endpoint for precise tests.
pub struct RawClient {
    socket: UdpSocket,
}

impl RawClient {
    pub fn new(server: SocketAddr) -> Self {
        Self::from_ip(server, [127, 0, 0, 1])
    }

    /// A client on another loopback address (127.0.0.0/8 is all loopback on Linux): another
    /// source host, for the server's per-source limits.
    pub fn from_ip(server: SocketAddr, ip: [u8; 4]) -> Self {
        let socket = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind client");
        socket.connect(server).expect("connect");
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
            .recv_within(Duration::from_secs(10))
            .expect("an answer within 10 s");
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

/// The datagram of a confirmable temperature reading `value` with the query `query`
/// (`["place=desk", "ts=…"]`), as a sensor sends it.
pub fn temperature_reading(mid: u16, query: &[&str], value: &str) -> Vec<u8> {
    request(
        MessageType::Confirmable,
        RequestType::Post,
        mid,
        "/sensors/dht/temperature",
        query,
        value.as_bytes(),
    )
    .to_bytes()
    .expect("encodable")
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
