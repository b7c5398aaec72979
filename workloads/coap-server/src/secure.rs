//! The DTLS side (`coaps://`, RFC 7252 §9): which peer has which session, and what each
//! received datagram does to it. The DTLS itself is Mbed TLS's ([`mbed`]).
//!
//! Before a peer has answered a cookie, nothing about it is kept: one listening session answers
//! every ClientHello without a valid cookie with a HelloVerifyRequest carrying an HMAC of its
//! address, smaller than any ClientHello, and forgets it. Only a ClientHello that returns the
//! cookie (so the address is real) makes a handshake, and handshakes are bounded in all, per
//! address and in time; established sessions are bounded in all and per device, and expire
//! when idle. A device removed from the registry, or given another key, loses its sessions at
//! the next datagram after the change.

mod mbed;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iot_common::udp::Outbox;

pub use self::mbed::SetupError;
use self::mbed::{Hello, Server, Session, Step};
use crate::devices::{Device, Devices};
use crate::metrics::Metrics;

/// How much DTLS state the server keeps, at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Established sessions, from all devices; when full, a new one replaces the one quiet the
    /// longest. Each costs about 6 KB (docs/benchmarks.md): 10,000 take about 60 MB, inside
    /// the pod's default 128 MiB limit with room for the write queue.
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
            sessions: 10_000,
            sessions_per_device: 4,
            handshakes: 1_024,
            handshakes_per_ip: 16,
            handshake_timeout: Duration::from_secs(10),
            session_idle: Duration::from_secs(3_600),
        }
    }
}

enum State {
    /// Past the cookie exchange; the device is known once its key was looked up.
    Handshake {
        since: Instant,
        device: Option<Arc<Device>>,
    },
    Established(Arc<Device>),
}

struct Peer {
    session: Session,
    state: State,
    last_seen: Instant,
}

/// What one received datagram yielded: CoAP messages from an established device.
pub(crate) struct Received {
    pub(crate) device: Arc<Device>,
    pub(crate) messages: Vec<Vec<u8>>,
}

/// Every DTLS peer of the server.
pub(crate) struct Sessions {
    /// The session that answers ClientHellos; it becomes a peer's once a cookie is verified.
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
    server: Server,
}

/// A datagram that starts a new association: a ClientHello in a record of epoch 0 (RFC 6347
/// §4.2.8: a client that lost its session, e.g. after a restart on the same port). Only the
/// record header's type and epoch and the handshake message's type are looked at; Mbed TLS reads
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
        let server = Server::new(devices.clone())?;
        Ok(Sessions {
            listener: server.session(),
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
            server,
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
        match &mut p.state {
            State::Handshake { device, .. } => {
                let (step, identified) = self.server.handshake(&mut p.session, datagram);
                if identified.is_some() {
                    *device = identified;
                }
                send_all(&mut p.session, peer, out);
                match step {
                    Step::Done => self.established(peer),
                    Step::More => {}
                    Step::Failed(error) => {
                        tracing::debug!(%peer, %error, "DTLS handshake failed");
                        self.metrics.handshake("failed");
                        self.remove(peer);
                    }
                }
                None
            }
            State::Established(device) => {
                let device = device.clone();
                let records = p.session.read(datagram, &mut self.buf);
                send_all(&mut p.session, peer, out);
                if records.closed {
                    self.remove(peer);
                }
                (!records.messages.is_empty()).then_some(Received {
                    device,
                    messages: records.messages,
                })
            }
        }
    }

    /// Encrypts `message` for `peer`'s session into `out`. False when it has none (it expired
    /// or was revoked since the request came): the answer is dropped.
    pub(crate) fn seal(&mut self, peer: SocketAddr, message: &[u8], out: &mut Outbox) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        if !matches!(p.state, State::Established(_)) || !p.session.write(message) {
            return false;
        }
        send_all(&mut p.session, peer, out);
        true
    }

    fn listen(&mut self, peer: SocketAddr, datagram: &[u8], now: Instant, out: &mut Outbox) {
        let hello = self.server.hello(&mut self.listener, peer, datagram);
        let written = self.listener.take_outgoing();
        match hello {
            Hello::Verified => {
                self.remove(peer);
                self.start_handshake(peer, written, now, out);
            }
            Hello::Verify | Hello::Dropped => {
                if hello == Hello::Verify {
                    self.metrics.dtls_hello_verify.inc();
                } else {
                    tracing::trace!(%peer, "datagram without a session dropped");
                    self.metrics.malformed("dtls_no_session");
                }
                // The address is unverified: nothing larger than what it sent goes back (a
                // HelloVerifyRequest always is smaller; this keeps it so for anything else).
                for answer in written.into_iter().filter(|a| a.len() <= datagram.len()) {
                    out.push(peer, answer);
                }
            }
        }
    }

    fn start_handshake(
        &mut self,
        peer: SocketAddr,
        written: Vec<Vec<u8>>,
        now: Instant,
        out: &mut Outbox,
    ) {
        let per_ip = self.handshakes_by_ip.get(&peer.ip()).copied().unwrap_or(0);
        // The listener's handshake becomes the peer's; a fresh listener takes its place.
        let session = std::mem::replace(&mut self.listener, self.server.session());
        if self.handshakes >= self.limits.handshakes || per_ip >= self.limits.handshakes_per_ip {
            // Its ServerHello is not sent: the peer tries again after its timer.
            self.metrics.handshake("over_limit");
            return;
        }
        for answer in written {
            out.push(peer, answer);
        }
        self.handshakes += 1;
        *self.handshakes_by_ip.entry(peer.ip()).or_default() += 1;
        self.peers.insert(
            peer,
            Peer {
                session,
                state: State::Handshake {
                    since: now,
                    device: None,
                },
                last_seen: now,
            },
        );
    }

    fn established(&mut self, peer: SocketAddr) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let State::Handshake {
            device: Some(device),
            ..
        } = &p.state
        else {
            // A finished handshake always looked its key up; without a device it cannot stay.
            self.remove(peer);
            return;
        };
        let device = device.clone();
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
        let stale: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| match &p.state {
                State::Handshake { since, .. } => {
                    now.duration_since(*since) > limits.handshake_timeout
                }
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

/// Moves what Mbed TLS wrote for `peer` into `out`.
fn send_all(session: &mut Session, peer: SocketAddr, out: &mut Outbox) {
    for datagram in session.take_outgoing() {
        out.push(peer, datagram);
    }
}
