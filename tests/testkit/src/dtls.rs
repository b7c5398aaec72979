//! A blocking CoAP-over-DTLS endpoint for precise tests of coap-server's `coaps://` side: a
//! device with a name and a pre-shared key, over OpenSSL (iot-common's `dtls`), on its own
//! loopback socket. Every step can fail visibly: a handshake that does not finish, an answer
//! that does not come.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use coap_lite::Packet;
use iot_common::dtls::{self, Session};
use openssl::ssl::{ErrorCode, SslContext};

/// A device talking DTLS to one server.
pub struct DtlsClient {
    socket: UdpSocket,
    session: Session,
}

/// Why a handshake did not finish.
#[derive(Debug)]
pub enum HandshakeError {
    /// The server ended it (an alert: e.g. an unknown identity).
    Failed(String),
    /// No answer in time (e.g. a wrong key: the server cannot read our Finished, and drops it).
    TimedOut,
}

fn context(identity: &str, key: &[u8]) -> SslContext {
    let (identity, key) = (identity.as_bytes().to_vec(), key.to_vec());
    let mut ctx = dtls::context_builder().expect("client context");
    ctx.set_psk_client_callback(move |_, _hint, id, psk| {
        id[..identity.len()].copy_from_slice(&identity);
        id[identity.len()] = 0;
        psk[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    ctx.build()
}

impl DtlsClient {
    /// Handshakes with `server` as `identity` with `key`, from a new loopback port, within
    /// `within`.
    pub fn connect(
        server: SocketAddr,
        identity: &str,
        key: &[u8],
        within: Duration,
    ) -> Result<DtlsClient, HandshakeError> {
        Self::connect_from(server, [127, 0, 0, 1], identity, key, within)
    }

    /// As [`Self::connect`], from another loopback address.
    pub fn connect_from(
        server: SocketAddr,
        ip: [u8; 4],
        identity: &str,
        key: &[u8],
        within: Duration,
    ) -> Result<DtlsClient, HandshakeError> {
        let socket = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind client");
        socket.connect(server).expect("connect");
        let session = dtls::session(&context(identity, key)).expect("session");
        let mut client = DtlsClient { socket, session };
        client.handshake(within)?;
        Ok(client)
    }

    fn handshake(&mut self, within: Duration) -> Result<(), HandshakeError> {
        let deadline = Instant::now() + within;
        let mut result = self.session.connect();
        loop {
            self.flush();
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == ErrorCode::WANT_READ => {}
                Err(e) => return Err(HandshakeError::Failed(e.to_string())),
            }
            // Wait for the server's next flight, retransmitting ours when OpenSSL's timer says.
            let datagram = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(HandshakeError::TimedOut);
                }
                let wait = dtls::timeout(self.session.ssl())
                    .unwrap_or(left)
                    .clamp(Duration::from_millis(1), left);
                match self.recv_raw(wait) {
                    Some(datagram) => break datagram,
                    None => {
                        dtls::handle_timeout(self.session.ssl());
                        self.flush();
                    }
                }
            };
            self.session.get_mut().feed(&datagram);
            result = self.session.do_handshake();
        }
    }

    /// The local address this device sends from.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("local address")
    }

    fn flush(&mut self) {
        for datagram in self.session.get_mut().take_outgoing() {
            let _ = self.socket.send(&datagram);
        }
    }

    fn recv_raw(&self, wait: Duration) -> Option<Vec<u8>> {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 2048];
        self.socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }

    /// Sends `bytes` (a CoAP message) in one record.
    pub fn send(&mut self, bytes: &[u8]) {
        self.session.ssl_write(bytes).expect("encrypt");
        self.flush();
    }

    /// Sends raw bytes past the session, as an attacker on the path could.
    pub fn send_raw(&self, bytes: &[u8]) {
        let _ = self.socket.send(bytes);
    }

    /// The next CoAP message from the server, or None within `wait`.
    pub fn recv_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let datagram = self.recv_raw(left)?;
            self.session.get_mut().feed(&datagram);
            if let Ok(n) = self.session.ssl_read(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
    }

    /// Sends `packet` and returns the answer, or None within `wait`.
    pub fn exchange_within(&mut self, packet: &Packet, wait: Duration) -> Option<Packet> {
        self.send(&packet.to_bytes().expect("encode"));
        let bytes = self.recv_within(wait)?;
        Some(Packet::from_bytes(&bytes).expect("answer is CoAP"))
    }

    /// Sends `packet` and returns the answer, which must come within 10 s.
    pub fn exchange(&mut self, packet: &Packet) -> Packet {
        self.exchange_within(packet, Duration::from_secs(10))
            .expect("an answer within 10 s")
    }
}
