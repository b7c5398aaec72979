//! The DTLS side (`coaps://`, RFC 7252 §9): which peer has which session, and what each
//! received datagram does to it.
//!
//! Before a peer has answered a cookie, nothing about it is kept: OpenSSL's `DTLSv1_listen`
//! answers its ClientHello with a HelloVerifyRequest carrying an HMAC of its address, no bigger
//! than the ClientHello. Only a ClientHello that returns the cookie (so the address is real)
//! makes a handshake, and handshakes are bounded in all, per address and in time; established
//! sessions are bounded in all and per device, and expire when idle. A device removed from the
//! registry, or given another key, loses its sessions at the next datagram after the change.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iot_common::dtls::{self, Listen, Session};
use iot_common::udp::Outbox;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslOptions};

use crate::devices::{Device, Devices};
use crate::metrics::Metrics;

/// How much DTLS state the server keeps, at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Established sessions, from all devices; when full, a new one replaces the one quiet the
    /// longest. Each costs about 35–45 KB with OpenSSL 3.0 (docs/benchmarks.md), most of it a
    /// handshake buffer OpenSSL keeps for DTLS retransmissions: 1,000 fit the pod's default
    /// 128 MiB limit with room for the write queue.
    pub sessions: usize,
    /// Sessions of one device: a device that takes a new address (NAT rebinding, a restart)
    /// replaces its oldest session beyond this.
    pub sessions_per_device: usize,
    /// Handshakes in progress (past the cookie), from all addresses.
    pub handshakes: usize,
    /// Handshakes in progress from one IP address.
    pub handshakes_per_ip: u32,
    /// A handshake not finished in this time is dropped.
    pub handshake_timeout: Duration,
    /// A session that has received nothing for this long is dropped; the device's next
    /// datagram then gets no answer and it handshakes again.
    pub session_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sessions: 1_000,
            sessions_per_device: 4,
            handshakes: 1_024,
            handshakes_per_ip: 16,
            handshake_timeout: Duration::from_secs(10),
            session_idle: Duration::from_secs(3_600),
        }
    }
}

/// A DTLS context or session could not be made: OpenSSL's own errors.
#[derive(Debug, thiserror::Error)]
#[error("DTLS set-up failed: {0}")]
pub struct SetupError(#[from] ErrorStack);

enum State {
    Handshake { since: Instant },
    Established(Arc<Device>),
}

struct Peer {
    session: Session,
    state: State,
    last_seen: Instant,
    /// Whether its record buffers were given back since it last received.
    buffers_freed: bool,
}

/// What one received datagram yielded: CoAP messages from an established device.
pub(crate) struct Received {
    pub(crate) device: Arc<Device>,
    pub(crate) messages: Vec<Vec<u8>>,
}

/// Every DTLS peer of the server.
pub(crate) struct Sessions {
    ctx: SslContext,
    cookies: Arc<Cookies>,
    /// The session `DTLSv1_listen` runs on; it becomes a peer's once a cookie is verified.
    listener: Session,
    peers: HashMap<SocketAddr, Peer>,
    handshakes: usize,
    handshakes_by_ip: HashMap<IpAddr, u32>,
    by_device: HashMap<Arc<str>, Vec<SocketAddr>>,
    limits: Limits,
    devices: Devices,
    generation: u64,
    last_sweep: Instant,
    metrics: Metrics,
    buf: Vec<u8>,
}

/// The device whose key a session's handshake used, set by the PSK callback.
fn device_index() -> Index<Ssl, Arc<Device>> {
    static INDEX: OnceLock<Index<Ssl, Arc<Device>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("an SSL ex_data index"))
}

/// Stateless cookies: an HMAC-SHA256 of the peer's address and the current minute, under a
/// key made at start-up. A cookie of this or the previous minute is taken.
struct Cookies {
    key: PKey<Private>,
    /// The peer whose ClientHello `DTLSv1_listen` is reading now (set just before, under the
    /// sessions' lock, so one at a time).
    peer: std::sync::Mutex<SocketAddr>,
}

const COOKIE_LEN: usize = 16;

impl Cookies {
    fn new() -> Result<Cookies, ErrorStack> {
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret)?;
        Ok(Cookies {
            key: PKey::hmac(&secret)?,
            peer: std::sync::Mutex::new(SocketAddr::from(([0, 0, 0, 0], 0))),
        })
    }

    fn set_peer(&self, peer: SocketAddr) {
        *self.peer.lock().unwrap_or_else(|p| p.into_inner()) = peer;
    }

    fn peer(&self) -> SocketAddr {
        *self.peer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn minute() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60)
    }

    fn cookie(&self, peer: SocketAddr, minute: u64) -> Result<[u8; COOKIE_LEN], ErrorStack> {
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        signer.update(&minute.to_be_bytes())?;
        match peer.ip() {
            IpAddr::V4(ip) => signer.update(&ip.octets())?,
            IpAddr::V6(ip) => signer.update(&ip.octets())?,
        }
        signer.update(&peer.port().to_be_bytes())?;
        let mac = signer.sign_to_vec()?;
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&mac[..COOKIE_LEN]);
        Ok(cookie)
    }

    fn verify(&self, peer: SocketAddr, got: &[u8]) -> bool {
        let now = Self::minute();
        [now, now.saturating_sub(1)].iter().any(|&m| {
            self.cookie(peer, m)
                .is_ok_and(|c| got.len() == COOKIE_LEN && openssl::memcmp::eq(&c, got))
        })
    }
}

/// The server's DTLS context: PSK from `devices`, stateless `cookies`, no renegotiation.
fn context(devices: Devices, cookies: Arc<Cookies>) -> Result<SslContext, ErrorStack> {
    let mut ctx = dtls::context_builder()?;
    ctx.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::COOKIE_EXCHANGE);
    ctx.set_psk_server_callback(move |ssl, identity, psk| {
        let registry = devices.current();
        // An unknown identity gets no key: OpenSSL ends the handshake with an alert.
        let Some(device) = identity.and_then(|id| registry.get(id)) else {
            return Ok(0);
        };
        let key = device.key();
        if key.len() > psk.len() {
            return Ok(0);
        }
        psk[..key.len()].copy_from_slice(key);
        ssl.set_ex_data(device_index(), device.clone());
        Ok(key.len())
    });
    let issuer = cookies.clone();
    ctx.set_cookie_generate_cb(move |_, buf| {
        let cookie = issuer.cookie(issuer.peer(), Cookies::minute())?;
        let n = cookie.len().min(buf.len());
        buf[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    });
    ctx.set_cookie_verify_cb(move |_, got| cookies.verify(cookies.peer(), got));
    Ok(ctx.build())
}

/// A datagram that starts a new association: a ClientHello in a record of epoch 0 (RFC 6347
/// §4.2.8: a client that lost its session, e.g. after a restart on the same port). Only the
/// record header's type and epoch and the handshake message's type are looked at; OpenSSL reads
/// the rest.
fn starts_association(datagram: &[u8]) -> bool {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    datagram.len() > 13
        && datagram[0] == HANDSHAKE
        && datagram[3..5] == [0, 0]
        && datagram[13] == CLIENT_HELLO
}

impl Sessions {
    pub(crate) fn new(
        devices: Devices,
        limits: Limits,
        metrics: Metrics,
    ) -> Result<Sessions, SetupError> {
        let cookies = Arc::new(Cookies::new()?);
        let ctx = context(devices.clone(), cookies.clone())?;
        let listener = dtls::session(&ctx)?;
        Ok(Sessions {
            ctx,
            cookies,
            listener,
            peers: HashMap::new(),
            handshakes: 0,
            handshakes_by_ip: HashMap::new(),
            by_device: HashMap::new(),
            limits,
            generation: devices.generation(),
            devices,
            last_sweep: Instant::now(),
            metrics,
            buf: vec![0; 2048],
        })
    }

    /// Takes one datagram from `peer`. Handshake datagrams to send go to `out`; CoAP messages
    /// of an established session are returned with their device.
    pub(crate) fn receive(
        &mut self,
        peer: SocketAddr,
        datagram: &[u8],
        now: Instant,
        out: &mut Outbox,
    ) -> Option<Received> {
        self.maintain(now);
        let established = self
            .peers
            .get(&peer)
            .is_some_and(|p| matches!(p.state, State::Established(_)));
        if established && starts_association(datagram) {
            // Its session may be gone on its side (a restart on the same port). The old one is
            // replaced only once the cookie shows the new ClientHello really comes from that
            // address (RFC 6347 §4.2.8): a forged one cannot end a device's session.
            self.listen(peer, datagram, now, out);
            return None;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            self.listen(peer, datagram, now, out);
            return None;
        };
        p.last_seen = now;
        p.buffers_freed = false;
        p.session.get_mut().feed(datagram);
        match &p.state {
            State::Handshake { .. } => {
                let result = p.session.do_handshake();
                send_all(&mut p.session, peer, out);
                match result {
                    Ok(()) => self.established(peer),
                    Err(e) if e.code() == ErrorCode::WANT_READ => {}
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "DTLS handshake failed");
                        self.metrics.handshake("failed");
                        self.remove(peer);
                    }
                }
                None
            }
            State::Established(device) => {
                let device = device.clone();
                let mut messages = Vec::new();
                let closed = loop {
                    match p.session.ssl_read(&mut self.buf) {
                        Ok(0) => break false,
                        Ok(n) => messages.push(self.buf[..n].to_vec()),
                        Err(e) if e.code() == ErrorCode::WANT_READ => break false,
                        Err(e) if e.code() == ErrorCode::ZERO_RETURN => break true,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "DTLS session ended");
                            break true;
                        }
                    }
                };
                send_all(&mut p.session, peer, out);
                if closed {
                    self.remove(peer);
                }
                (!messages.is_empty()).then_some(Received { device, messages })
            }
        }
    }

    /// Encrypts `message` for `peer`'s session into `out`. False when it has none (it expired
    /// or was revoked since the request came): the answer is dropped.
    pub(crate) fn seal(&mut self, peer: SocketAddr, message: &[u8], out: &mut Outbox) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        if !matches!(p.state, State::Established(_)) || p.session.ssl_write(message).is_err() {
            return false;
        }
        p.buffers_freed = false;
        send_all(&mut p.session, peer, out);
        true
    }

    fn listen(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant, out: &mut Outbox) {
        self.cookies.set_peer(peer);
        self.listener.get_mut().feed(datagram);
        let verified = dtls::listen(&mut self.listener);
        send_all(&mut self.listener, peer, out);
        match verified {
            Ok(Listen::NotYet) => {
                self.metrics.dtls_hello_verify.inc();
            }
            Ok(Listen::Verified) => {
                self.remove(peer);
                self.start_handshake(peer, now, out);
            }
            Err(e) => {
                // Not a ClientHello (a record of a session this server does not have, or
                // garbage): dropped. The listener clears itself at its next use.
                tracing::trace!(%peer, error = %e, "datagram without a session dropped");
                self.metrics.malformed("dtls_no_session");
            }
        }
    }

    fn start_handshake(&mut self, peer: SocketAddr, now: Instant, out: &mut Outbox) {
        let per_ip = self.handshakes_by_ip.get(&peer.ip()).copied().unwrap_or(0);
        if self.handshakes >= self.limits.handshakes || per_ip >= self.limits.handshakes_per_ip {
            // The peer tries again after its timer; meanwhile the listener goes on.
            self.metrics.handshake("over_limit");
            self.renew_listener();
            return;
        }
        let Some(mut session) = self.renew_listener() else {
            return;
        };
        let result = session.accept();
        send_all(&mut session, peer, out);
        if let Err(e) = &result
            && e.code() != ErrorCode::WANT_READ
        {
            self.metrics.handshake("failed");
            return;
        }
        self.handshakes += 1;
        *self.handshakes_by_ip.entry(peer.ip()).or_default() += 1;
        self.peers.insert(
            peer,
            Peer {
                session,
                state: State::Handshake { since: now },
                last_seen: now,
                buffers_freed: false,
            },
        );
        if result.is_ok() {
            self.established(peer);
        }
    }

    /// Swaps in a fresh listener; the old one, when its handshake was verified, is returned.
    fn renew_listener(&mut self) -> Option<Session> {
        match dtls::session(&self.ctx) {
            Ok(fresh) => Some(std::mem::replace(&mut self.listener, fresh)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a DTLS session");
                None
            }
        }
    }

    fn established(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(device) = p.session.ssl().ex_data(device_index()).cloned() else {
            self.remove(peer);
            return;
        };
        p.state = State::Established(device.clone());
        self.forget_handshake(peer.ip());
        self.metrics.handshake("ok");
        let mine = self.by_device.entry(device.name.clone()).or_default();
        mine.push(peer);
        if mine.len() > self.limits.sessions_per_device {
            let oldest = mine.remove(0);
            self.remove(oldest);
        }
        if self.established_count() > self.limits.sessions {
            // Full: the session quiet the longest goes (its device handshakes again when it
            // next sends), so memory stays bounded and active devices keep theirs.
            let quietest = self
                .peers
                .iter()
                .filter(|(a, p)| **a != peer && matches!(p.state, State::Established(_)))
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(&a, _)| a);
            if let Some(quietest) = quietest {
                self.metrics.dtls_sessions_evicted.inc();
                self.remove(quietest);
            }
        }
        self.metrics
            .dtls_sessions
            .set(self.established_count() as i64);
    }

    fn established_count(&self) -> usize {
        self.peers.len() - self.handshakes
    }

    fn forget_handshake(&mut self, ip: IpAddr) {
        self.handshakes = self.handshakes.saturating_sub(1);
        if let Some(n) = self.handshakes_by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.handshakes_by_ip.remove(&ip);
            }
        }
    }

    fn remove(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        match p.state {
            State::Handshake { .. } => self.forget_handshake(peer.ip()),
            State::Established(device) => {
                if let Some(mine) = self.by_device.get_mut(&device.name) {
                    mine.retain(|&a| a != peer);
                    if mine.is_empty() {
                        self.by_device.remove(&device.name);
                    }
                }
            }
        }
        self.metrics
            .dtls_sessions
            .set(self.established_count() as i64);
    }

    /// Once a second (called on every datagram and by a timer): drops stale handshakes and idle
    /// sessions, and sessions of devices the registry no longer holds as they were.
    pub(crate) fn maintain(&mut self, now: Instant) {
        let generation = self.devices.generation();
        let changed = generation != self.generation;
        if !changed && now.duration_since(self.last_sweep) < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        self.generation = generation;
        let registry = self.devices.current();
        let limits = self.limits;
        for p in self.peers.values_mut() {
            // A session quiet for a second gives back its record buffers (most of its memory);
            // a busy one keeps them rather than making them again for every datagram.
            if matches!(p.state, State::Established(_))
                && !p.buffers_freed
                && now.duration_since(p.last_seen) >= Duration::from_secs(1)
            {
                p.buffers_freed = dtls::free_buffers(p.session.ssl());
            }
        }
        let stale: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| match &p.state {
                State::Handshake { since } => now.duration_since(*since) > limits.handshake_timeout,
                State::Established(device) => {
                    now.duration_since(p.last_seen) > limits.session_idle
                        || (changed && !registry.still_has(device))
                }
            })
            .map(|(&a, _)| a)
            .collect();
        for peer in stale {
            self.remove(peer);
        }
        self.metrics
            .dtls_handshakes_in_progress
            .set(self.handshakes as i64);
    }
}

/// Moves what OpenSSL wrote for `peer` into `out`.
fn send_all(session: &mut Session, peer: SocketAddr, out: &mut Outbox) {
    for datagram in session.get_mut().take_outgoing() {
        out.push(peer, datagram);
    }
}
