//! A CoAP client endpoint on one UDP socket with RFC 7252 reliability: confirmable requests are
//! retransmitted after ACK_TIMEOUT × random(1, ACK_RANDOM_FACTOR), doubling each time, up to
//! MAX_RETRANSMIT times (§4.2). Many requests can be outstanding at once; answers are matched
//! by message ID (piggybacked) or token (separate answers, §5.2.2).
//!
//! Requests come either from [`Client::request`] callers (a channel and a task each) or from a
//! [`Driver`] run inside the endpoint's own loop ([`drive`]), which is how the load generator
//! keeps thousands of requests in flight at a few microseconds each.
//!
//! An endpoint may speak DTLS with a pre-shared key instead of plain UDP ([`Dtls`], RFC 7252
//! §9.1): it handshakes before its first request, seals each message into one record, and when
//! the session looks dead (a fatal alert, or an exchange at its second retransmission with
//! nothing heard from the server since it was sent: a replaced server that knows no session
//! drops our records without a word) it handshakes again and sends its outstanding exchanges
//! over the new session with their message IDs, so the server's deduplication still knows them.
//!
//! With [`SourcePort::PerExchange`] an endpoint moves to a new socket (a new source port, and
//! over DTLS a new session, since DTLS 1.2 binds a session to the address) for every exchange,
//! as a sensor behind a NAT that rebinds it does. It then runs one exchange at a time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{MessageClass, MessageType, RequestType, ResponseType};
use iot_common::coap::{self, Encoder, Message, option};
use iot_common::udp::{self, Datagrams, Inbox, Outbox};
use tokio::sync::{mpsc, oneshot};
use tokio_util::time::{DelayQueue, delay_queue};

use crate::stats::Stats;

#[cfg(test)]
mod dtls_tests;
mod secure;

pub use secure::{Credentials, Dtls, HandshakeError, HandshakePolicy, KeySource, identities_in};
use secure::{Handshake, Read, Secure};

/// The retransmission of an exchange at which, with nothing heard from the server since the
/// exchange was sent, a DTLS session is taken for dead.
const DEAD_AT_RETRANSMISSION: u32 = 2;

/// RFC 7252 §4.8 transmission parameters.
#[derive(Clone, Copy, Debug)]
pub struct Transmission {
    pub ack_timeout: Duration,
    pub ack_random_factor: f64,
    pub max_retransmit: u32,
}

impl Default for Transmission {
    fn default() -> Self {
        Transmission {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
        }
    }
}

impl Transmission {
    fn initial_timeout(&self) -> Duration {
        let factor = 1.0 + rand::random::<f64>() * (self.ack_random_factor - 1.0);
        self.ack_timeout.mul_f64(factor)
    }

    /// How long to wait for a separate answer after an empty ACK (MAX_TRANSMIT_WAIT, §4.8.2).
    fn max_transmit_wait(&self) -> Duration {
        self.ack_timeout
            .mul_f64(((1u64 << (self.max_retransmit + 1)) - 1) as f64 * self.ack_random_factor)
    }
}

/// Which source port an endpoint's exchanges come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourcePort {
    /// One socket for the endpoint's whole life.
    #[default]
    Kept,
    /// A new socket for every exchange; the old one is closed once its exchange has ended
    /// (answered or given up), so the endpoint holds one socket at a time. A load balancer
    /// that keeps a UDP flow on one backend (kube-proxy's conntrack) sees a new flow each time.
    PerExchange,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: RequestType,
    pub path: &'static [&'static str],
    pub query: Vec<String>,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub code: ResponseType,
    pub payload: Vec<u8>,
    pub max_age: Option<u32>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ExchangeError {
    #[error("no answer after {0} retransmissions")]
    Timeout(u32),
    #[error("the server reset the exchange (RST)")]
    Reset,
    #[error("the client endpoint has stopped")]
    Closed,
    #[error("cannot encode the request: {0}")]
    Encode(String),
    #[error("no DTLS session: {0}")]
    Handshake(HandshakeError),
}

struct Cmd {
    request: Request,
    reply: oneshot::Sender<Result<Response, ExchangeError>>,
}

#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Cmd>,
}

impl Client {
    /// Binds an ephemeral local port and talks to `server`, over DTLS if `dtls` is given.
    pub async fn connect(
        server: SocketAddr,
        params: Transmission,
        stats: Arc<Stats>,
        dtls: Option<Dtls>,
    ) -> std::io::Result<Client> {
        let endpoint = Endpoint::bind(server, params, stats, None, dtls, SourcePort::Kept).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(endpoint.run(Some(rx)));
        Ok(Client { tx })
    }

    /// Sends a confirmable request and waits for its answer (retransmitting as needed).
    pub async fn request(&self, request: Request) -> Result<Response, ExchangeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Cmd { request, reply })
            .await
            .map_err(|_| ExchangeError::Closed)?;
        answer.await.map_err(|_| ExchangeError::Closed)?
    }
}

/// Runs the requests of `driver` on an endpoint of its own (an ephemeral local port talking to
/// `server`, over DTLS if `dtls` is given, moving to a new port as `ports` says) until every
/// slot of the driver is [`Step::Done`] and its last exchange has ended.
pub async fn drive(
    server: SocketAddr,
    params: Transmission,
    stats: Arc<Stats>,
    driver: Box<dyn Driver>,
    dtls: Option<Dtls>,
    ports: SourcePort,
) -> std::io::Result<()> {
    Endpoint::bind(server, params, stats, Some(driver), dtls, ports)
        .await?
        .run(None)
        .await;
    Ok(())
}

/// Makes requests from inside the endpoint's loop: each of its slots holds at most one exchange
/// at a time, and is asked what to do next when that exchange ends or its wake-up comes.
pub trait Driver: Send + 'static {
    fn slots(&self) -> usize;
    /// What `slot` does next: at the start and after a wake-up `ended` is `None`; when its
    /// exchange ended, the outcome.
    fn next(&mut self, slot: usize, ended: Option<Result<Response, ExchangeError>>) -> Step;
}

#[derive(Debug)]
pub enum Step {
    /// Start an exchange with this request.
    Send(Request),
    /// Ask again at this time.
    WakeAt(Instant),
    /// Nothing more from this slot.
    Done,
}

/// Who is told how an exchange ended.
enum Waiter {
    Caller(oneshot::Sender<Result<Response, ExchangeError>>),
    Slot(usize),
}

/// What a timer is for.
#[derive(Clone, Copy)]
enum Timer {
    /// Retransmission, or the wait for a separate answer, of the exchange with this message ID.
    Exchange(u16),
    /// A driver slot's wake-up.
    Wake(usize),
    /// The DTLS handshake's: a retransmission of its flight, its deadline, or the next attempt.
    Link,
}

/// Large receive buffer: a server answering a whole batch at once sends a burst of datagrams.
const UDP_BUFFERS: udp::Buffers = udp::Buffers {
    recv: 4 << 20,
    send: 1 << 20,
};

struct Exchange {
    datagram: Vec<u8>,
    token: u64,
    retransmits: u32,
    timeout: Duration,
    /// Set once an empty ACK arrived: the answer comes separately, stop retransmitting.
    acked: bool,
    /// The armed timer (retransmission, or the wait for a separate answer); `None` while its
    /// expiry is being handled, and while the exchange waits for a DTLS session.
    timer: Option<delay_queue::Key>,
    waiter: Waiter,
    /// Whether the message went out at least once (over DTLS, it waits for a session).
    on_wire: bool,
    /// [`Endpoint::heard`] when the message last went out.
    heard_then: u64,
}

/// Requests started per turn of the endpoint's loop at most, so that answers and timers are
/// not held up behind a long queue of new requests.
const START_BATCH: usize = 256;

/// Receive buffers per system call.
const RECV_BATCH: usize = 16;

struct Endpoint {
    datagrams: Datagrams,
    server: SocketAddr,
    /// Datagrams of this turn of the loop, sent together at its end.
    outbox: Outbox,
    params: Transmission,
    stats: Arc<Stats>,
    next_mid: u16,
    next_token: u64,
    exchanges: HashMap<u16, Exchange>,
    by_token: HashMap<u64, u16>,
    /// One timer per open exchange (its message ID), removed when the exchange ends, so a
    /// timer that fires always belongs to the exchange now holding that ID; and one per driver
    /// slot waiting to go on. A queue that kept every request's timer until it fired held
    /// seconds' worth of them at load-test rates, and popping them was a tenth of the
    /// client's CPU.
    timers: DelayQueue<Timer>,
    driver: Option<Box<dyn Driver>>,
    /// Driver slots not yet done.
    live_slots: usize,
    /// The DTLS session, when the endpoint speaks DTLS.
    secure: Option<Secure>,
    /// The handshake's timer ([`Timer::Link`]), while one is armed.
    link_timer: Option<delay_queue::Key>,
    /// Messages received over DTLS so far: an exchange that saw this unchanged between its
    /// transmission and its second retransmission heard nothing at all from the server.
    heard: u64,
    ports: SourcePort,
    /// With [`SourcePort::PerExchange`]: the socket's exchange has ended; the loop moves to a
    /// new socket at its next turn, once what is queued for this one has gone out.
    retiring: bool,
    /// With [`SourcePort::PerExchange`]: exchanges waiting for a socket of their own.
    deferred: VecDeque<(Request, Waiter)>,
}

impl Endpoint {
    async fn bind(
        server: SocketAddr,
        params: Transmission,
        stats: Arc<Stats>,
        driver: Option<Box<dyn Driver>>,
        dtls: Option<Dtls>,
        ports: SourcePort,
    ) -> std::io::Result<Self> {
        let datagrams = open(server).await?;
        stats.source_ports.inc();
        Ok(Endpoint {
            datagrams,
            server,
            // DTLS records must arrive about in order (the server's replay window).
            outbox: if dtls.is_some() {
                Outbox::ordered()
            } else {
                Outbox::default()
            },
            params,
            stats,
            // §4.4: start at a random message ID and token.
            next_mid: rand::random(),
            next_token: rand::random(),
            exchanges: HashMap::new(),
            by_token: HashMap::new(),
            timers: DelayQueue::new(),
            live_slots: driver.as_ref().map_or(0, |d| d.slots()),
            driver,
            secure: dtls.map(Secure::new),
            link_timer: None,
            heard: 0,
            ports,
            retiring: false,
            deferred: VecDeque::new(),
        })
    }

    /// Each turn sends what the last one produced in one go (at the start, the driver's first
    /// requests), then handles what is there: new requests, a batch of datagrams, or due timers.
    async fn run(mut self, mut rx: Option<mpsc::Receiver<Cmd>>) {
        let mut inbox = Inbox::new(RECV_BATCH);
        for slot in 0..self.live_slots {
            self.ask_driver(slot, None);
        }
        loop {
            if !self.outbox.is_empty() {
                // ICMP "port unreachable" from an earlier datagram can surface as a failed
                // send; the retransmission timers cover the loss either way.
                self.datagrams.send(&mut self.outbox).await;
            }
            if rx.is_none()
                && self.live_slots == 0
                && self.exchanges.is_empty()
                && self.deferred.is_empty()
            {
                self.close().await;
                return;
            }
            if self.retiring {
                self.move_to_new_socket().await;
                // What the exchanges started there queued goes out first.
                continue;
            }
            tokio::select! {
                cmd = recv(&mut rx), if rx.is_some() => match (cmd, &mut rx) {
                    (Some(cmd), Some(rx)) => {
                        self.start(cmd.request, Waiter::Caller(cmd.reply));
                        for _ in 1..START_BATCH {
                            match rx.try_recv() {
                                Ok(cmd) => self.start(cmd.request, Waiter::Caller(cmd.reply)),
                                Err(_) => break,
                            }
                        }
                    }
                    _ => rx = None,
                },
                r = self.datagrams.recv(&mut inbox) => match r {
                    // One test per batch: the plain path stays as it was.
                    Ok(()) if self.secure.is_none() => {
                        for (datagram, _) in inbox.datagrams() {
                            self.on_datagram(datagram);
                        }
                    }
                    Ok(()) => {
                        for (datagram, _) in inbox.datagrams() {
                            self.on_record(datagram);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "recv failed"),
                },
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)),
                    if !self.timers.is_empty() => {
                    match expired.into_inner() {
                        Timer::Exchange(mid) => self.on_timeout(mid),
                        Timer::Wake(slot) => self.ask_driver(slot, None),
                        Timer::Link => self.on_link_timer(),
                    }
                }
            }
        }
    }

    /// Hands `ended` (if any) to the driver and does what it says for `slot`.
    fn ask_driver(&mut self, slot: usize, ended: Option<Result<Response, ExchangeError>>) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        match driver.next(slot, ended) {
            Step::Send(request) => self.start(request, Waiter::Slot(slot)),
            Step::WakeAt(at) => {
                self.timers.insert_at(Timer::Wake(slot), at.into());
            }
            Step::Done => self.live_slots = self.live_slots.saturating_sub(1),
        }
    }

    fn start(&mut self, request: Request, waiter: Waiter) {
        if self.ports == SourcePort::PerExchange && (self.retiring || !self.exchanges.is_empty()) {
            self.deferred.push_back((request, waiter));
            return;
        }
        // Skip message IDs still in use (only possible with 65536 requests outstanding).
        let mut mid = self.next_mid;
        while self.exchanges.contains_key(&mid) {
            mid = mid.wrapping_add(1);
        }
        self.next_mid = mid.wrapping_add(1);
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        let datagram = match encode(&request, mid, token) {
            Ok(d) => d,
            Err(e) => {
                self.tell(waiter, Err(e));
                return;
            }
        };
        let timeout = self.params.initial_timeout();
        self.stats.sent.inc();
        let on_wire = self.secure.as_ref().is_none_or(|s| s.is_up());
        // Without a session the message goes out, and its timer starts, once there is one.
        let timer = on_wire.then(|| {
            self.send(datagram.clone());
            self.timers.insert(Timer::Exchange(mid), timeout)
        });
        self.by_token.insert(token, mid);
        self.exchanges.insert(
            mid,
            Exchange {
                datagram,
                token,
                retransmits: 0,
                timeout,
                acked: false,
                timer,
                waiter,
                on_wire,
                heard_then: self.heard,
            },
        );
        if !on_wire {
            self.arm_link_timer();
        }
    }

    /// Queues a datagram for the end of this turn of the loop (over DTLS, its record; with no
    /// session, nothing: what matters is sent again once there is one).
    fn send(&mut self, datagram: Vec<u8>) {
        match &mut self.secure {
            None => self.outbox.push(self.server, datagram),
            Some(secure) => {
                if !secure.seal(&datagram) {
                    tracing::debug!(identity = %secure.identity(), "message not sealed");
                }
                self.flush_link();
            }
        }
    }

    /// Moves the datagrams OpenSSL wrote to the outbox.
    fn flush_link(&mut self) {
        if let Some(secure) = &mut self.secure {
            for datagram in secure.outgoing() {
                self.outbox.push(self.server, datagram);
            }
        }
    }

    /// Arms [`Timer::Link`] for when the DTLS link needs attention next: the handshake's
    /// retransmission or deadline, or, with no session, the next attempt (which starts only if
    /// exchanges wait for it). Disarms it while a session is up.
    fn arm_link_timer(&mut self) {
        let Some(secure) = &self.secure else {
            return;
        };
        let at = secure
            .retry_at()
            .or_else(|| secure.handshake_timer(Instant::now()));
        match (at, &self.link_timer) {
            (Some(at), Some(key)) => self.timers.reset_at(key, at.into()),
            (Some(at), None) => {
                self.link_timer = Some(self.timers.insert_at(Timer::Link, at.into()))
            }
            (None, Some(key)) => {
                self.timers.remove(key);
                self.link_timer = None;
            }
            (None, None) => {}
        }
    }

    /// [`Timer::Link`] fired: start a handshake for the waiting exchanges, or let the one
    /// under way retransmit or end.
    fn on_link_timer(&mut self) {
        self.link_timer = None;
        let Some(secure) = &mut self.secure else {
            return;
        };
        let now = Instant::now();
        let step = match secure.retry_at() {
            Some(_) if self.exchanges.is_empty() => return,
            Some(at) if at > now => {
                self.arm_link_timer();
                return;
            }
            Some(_) => secure.begin(now),
            None => secure.on_timer(now),
        };
        self.after_handshake(step);
    }

    /// Acts on where the handshake stands: sends what OpenSSL wrote, and with a new session
    /// the outstanding exchanges; after a failure that uses up the attempts, fails the
    /// exchanges that wait.
    fn after_handshake(&mut self, step: Handshake) {
        self.flush_link();
        match step {
            Handshake::Pending => {}
            Handshake::Established => {
                self.stats.handshakes.inc();
                self.resume();
            }
            Handshake::Failed { error, give_up } => {
                self.stats.handshake_failures.inc();
                if give_up {
                    let waiting: Vec<u16> = self.exchanges.keys().copied().collect();
                    for mid in waiting {
                        self.finish(mid, Err(ExchangeError::Handshake(error.clone())));
                    }
                }
            }
        }
        self.arm_link_timer();
    }

    /// Sends every outstanding exchange over the new session, with its message ID and token,
    /// and starts its timer again where it was.
    fn resume(&mut self) {
        let Some(secure) = &mut self.secure else {
            return;
        };
        for (&mid, ex) in &mut self.exchanges {
            if !secure.seal(&ex.datagram) {
                tracing::debug!(identity = %secure.identity(), "message not sealed");
            }
            if ex.on_wire {
                self.stats.retransmitted.inc();
            }
            ex.on_wire = true;
            // A separate answer promised over the old session will not come over this one.
            ex.acked = false;
            ex.heard_then = self.heard;
            if let Some(timer) = ex.timer.take() {
                self.timers.remove(&timer);
            }
            ex.timer = Some(self.timers.insert(Timer::Exchange(mid), ex.timeout));
        }
        self.flush_link();
    }

    /// The session looks dead: its exchanges stop their timers and wait for the next one,
    /// whose handshake starts at once.
    fn session_dead(&mut self, why: &str) {
        let Some(secure) = &mut self.secure else {
            return;
        };
        secure.drop_session(Instant::now(), why);
        for ex in self.exchanges.values_mut() {
            if let Some(timer) = ex.timer.take() {
                self.timers.remove(&timer);
            }
        }
        self.arm_link_timer();
    }

    /// A datagram over DTLS: a step of the handshake, or records with CoAP messages.
    fn on_record(&mut self, datagram: &[u8]) {
        let Some(secure) = &mut self.secure else {
            return;
        };
        if let Some(step) = secure.on_datagram(datagram, Instant::now()) {
            self.after_handshake(step);
        }
        // Room for any message a server sends to a client that sends at most MAX_MESSAGE.
        let mut buf = [0u8; 2 * MAX_MESSAGE];
        while let Some(secure) = &mut self.secure {
            match secure.read(&mut buf) {
                Read::Message(n) => {
                    self.heard += 1;
                    self.on_datagram(&buf[..n]);
                }
                Read::Done => break,
                Read::Dead(why) => {
                    self.session_dead(&why);
                    break;
                }
            }
        }
        self.flush_link();
    }

    /// Closes the session of the socket whose exchange has ended and moves to a new socket,
    /// where the exchanges that waited for one start. Should no socket be had (out of file
    /// descriptors), the endpoint stays on the old one: a source port kept beats no reading.
    async fn move_to_new_socket(&mut self) {
        self.retiring = false;
        self.close().await;
        match open(self.server).await {
            Ok(datagrams) => {
                self.datagrams = datagrams;
                self.stats.source_ports.inc();
            }
            Err(e) => tracing::warn!(error = %e, "cannot open a new socket; keeping the old one"),
        }
        if let Some(secure) = &mut self.secure {
            secure.forget(Instant::now());
        }
        if let Some(key) = self.link_timer.take() {
            self.timers.remove(&key);
        }
        // Each starts or, behind the first, waits again for a socket of its own.
        for (request, waiter) in std::mem::take(&mut self.deferred) {
            self.start(request, waiter);
        }
    }

    /// Ends a DTLS session with close_notify, so that the server forgets it at once.
    async fn close(&mut self) {
        if let Some(secure) = &mut self.secure {
            secure.close();
            self.flush_link();
            self.datagrams.send(&mut self.outbox).await;
        }
    }

    /// The timer of exchange `mid` fired (the queue has already let go of it).
    fn on_timeout(&mut self, mid: u16) {
        let Some(ex) = self.exchanges.get_mut(&mid) else {
            return;
        };
        ex.timer = None;
        if ex.acked || ex.retransmits >= self.params.max_retransmit {
            // No answer after the last retransmission, or, after an empty ACK, no separate
            // answer within MAX_TRANSMIT_WAIT.
            let n = ex.retransmits;
            self.finish(mid, Err(ExchangeError::Timeout(n)));
            return;
        }
        ex.retransmits += 1;
        ex.timeout *= 2;
        if self.secure.is_some()
            && ex.retransmits == DEAD_AT_RETRANSMISSION
            && ex.heard_then == self.heard
        {
            // This retransmission goes over the next session, with the other exchanges.
            self.session_dead("no answer at all to a second retransmission");
            return;
        }
        ex.timer = Some(self.timers.insert(Timer::Exchange(mid), ex.timeout));
        let datagram = ex.datagram.clone();
        self.stats.retransmitted.inc();
        self.send(datagram);
    }

    fn finish(&mut self, mid: u16, result: Result<Response, ExchangeError>) {
        if let Some(ex) = self.exchanges.remove(&mid) {
            self.by_token.remove(&ex.token);
            if let Some(timer) = ex.timer {
                self.timers.remove(&timer);
            }
            // Set before the waiter hears of it: an exchange it starts at once waits for the
            // new socket.
            self.retiring |= self.ports == SourcePort::PerExchange && self.exchanges.is_empty();
            self.tell(ex.waiter, result);
        }
    }

    fn tell(&mut self, waiter: Waiter, result: Result<Response, ExchangeError>) {
        match waiter {
            Waiter::Caller(reply) => {
                let _ = reply.send(result);
            }
            Waiter::Slot(slot) => self.ask_driver(slot, Some(result)),
        }
    }

    fn on_datagram(&mut self, datagram: &[u8]) {
        let Ok(message) = Message::parse(datagram) else {
            self.stats.malformed.inc();
            return;
        };
        let mid = message.message_id;
        let kind = message.kind;
        match (kind, message.class) {
            (MessageType::Reset, _) => self.finish(mid, Err(ExchangeError::Reset)),
            (MessageType::Acknowledgement, MessageClass::Empty) => {
                // §5.2.2: the answer will come separately; stop retransmitting, keep waiting.
                let wait = self.params.max_transmit_wait();
                if let Some(ex) = self.exchanges.get_mut(&mid) {
                    ex.acked = true;
                    if let Some(timer) = &ex.timer {
                        self.timers.reset(timer, wait);
                    }
                }
            }
            (MessageType::Acknowledgement, MessageClass::Response(code)) => {
                let matches = self
                    .exchanges
                    .get(&mid)
                    .is_some_and(|ex| token_of(&message) == Some(ex.token));
                if matches {
                    self.finish(mid, Ok(response(code, &message)));
                }
            }
            (
                MessageType::Confirmable | MessageType::NonConfirmable,
                MessageClass::Response(code),
            ) => {
                if kind == MessageType::Confirmable {
                    // Acknowledge a separate answer, even a duplicate one (§4.2).
                    self.send(coap::empty(MessageType::Acknowledgement, mid));
                }
                let found = token_of(&message).and_then(|t| self.by_token.get(&t).copied());
                if let Some(request_mid) = found {
                    self.finish(request_mid, Ok(response(code, &message)));
                }
            }
            (MessageType::Confirmable, _) => {
                // A request or ping sent to a client: reject it (§4.2).
                self.send(coap::empty(MessageType::Reset, mid));
            }
            _ => {}
        }
    }
}

/// A socket on an ephemeral local port, connected to `server`.
async fn open(server: SocketAddr) -> std::io::Result<Datagrams> {
    let socket = udp::bind(udp::any_local_for(server), UDP_BUFFERS)?;
    socket.connect(server).await?;
    Datagrams::new(socket)
}

/// The next command, or `None` once every [`Client`] is gone (or there is no channel).
async fn recv(rx: &mut Option<mpsc::Receiver<Cmd>>) -> Option<Cmd> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

fn token_of(m: &Message<'_>) -> Option<u64> {
    <[u8; 8]>::try_from(m.token).ok().map(u64::from_be_bytes)
}

fn response(code: ResponseType, m: &Message<'_>) -> Response {
    Response {
        code,
        payload: m.payload.to_vec(),
        // One longer than four bytes is no Max-Age we could honour: as if absent.
        max_age: m.first(option::MAX_AGE).and_then(coap::uint),
    }
}

/// The largest message sent: one that fits an IPv6 packet of the minimum MTU (RFC 7252 §4.6).
const MAX_MESSAGE: usize = 1280;

/// The request as a confirmable message with an 8-byte token.
fn encode(req: &Request, mid: u16, token: u64) -> Result<Vec<u8>, ExchangeError> {
    let class = MessageClass::Request(req.method);
    let mut message = Encoder::new(MessageType::Confirmable, class, mid, &token.to_be_bytes());
    for seg in req.path {
        message.option(option::URI_PATH, seg.as_bytes());
    }
    for q in &req.query {
        message.option(option::URI_QUERY, q.as_bytes());
    }
    let datagram = message.payload_bytes(&req.payload);
    if datagram.len() > MAX_MESSAGE {
        return Err(ExchangeError::Encode(format!(
            "the request is {} bytes, more than {MAX_MESSAGE}",
            datagram.len()
        )));
    }
    Ok(datagram)
}

#[cfg(test)]
mod tests {
    use coap_lite::Packet;

    use super::*;

    /// Fast timers, so that retransmissions happen within a test.
    const FAST: Transmission = Transmission {
        ack_timeout: Duration::from_millis(40),
        ack_random_factor: 1.5,
        max_retransmit: 2,
    };

    fn post() -> Request {
        Request {
            method: RequestType::Post,
            path: &["sensors", "dht", "temperature"],
            query: vec!["place=room1".into()],
            payload: b"21.5".to_vec(),
        }
    }

    /// An answer to `request` (of type `kind`, with `mid`), carrying its token.
    fn answer(request: &Packet, kind: MessageType, mid: u16, code: MessageClass) -> Vec<u8> {
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(kind);
        p.header.message_id = mid;
        p.header.code = code;
        if code != MessageClass::Empty {
            p.set_token(request.get_token().to_vec());
            p.payload = b"stored".to_vec();
        }
        p.to_bytes().unwrap()
    }

    /// A server on loopback that answers each datagram it receives with what `script` returns
    /// for it (and its number). Returns its address and its task, which ends 600 ms after the
    /// last datagram with all it received.
    async fn scripted_server(
        script: impl Fn(usize, &Packet) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<Packet>>) {
        let (addr, received) = recording_server(script).await;
        let packets = tokio::spawn(async move {
            let got = received.await.unwrap();
            got.into_iter().map(|(packet, _)| packet).collect()
        });
        (addr, packets)
    }

    /// A [`scripted_server`] that also keeps where each datagram came from.
    async fn recording_server(
        script: impl Fn(usize, &Packet) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<Vec<(Packet, SocketAddr)>>,
    ) {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let received = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(Ok((n, peer))) =
                tokio::time::timeout(Duration::from_millis(600), server.recv_from(&mut buf)).await
            {
                let packet = Packet::from_bytes(&buf[..n]).unwrap();
                for reply in script(got.len(), &packet) {
                    server.send_to(&reply, peer).await.unwrap();
                }
                got.push((packet, peer));
            }
            got
        });
        (addr, received)
    }

    /// Answers every request with a piggybacked 2.04.
    fn changed(_: usize, req: &Packet) -> Vec<Vec<u8>> {
        vec![answer(
            req,
            MessageType::Acknowledgement,
            req.header.message_id,
            MessageClass::Response(ResponseType::Changed),
        )]
    }

    /// A [`scripted_server`], a client of it and the client's stats.
    async fn client_and_server(
        script: impl Fn(usize, &Packet) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (Client, Arc<Stats>, tokio::task::JoinHandle<Vec<Packet>>) {
        let (addr, received) = scripted_server(script).await;
        let stats = Arc::new(Stats::default());
        let client = Client::connect(addr, FAST, stats.clone(), None)
            .await
            .unwrap();
        (client, stats, received)
    }

    #[tokio::test]
    async fn a_lost_request_is_retransmitted_and_its_answer_accepted() {
        let (client, stats, server) = client_and_server(|n, req| match n {
            0 => vec![], // the first transmission is "lost"
            _ => vec![answer(
                req,
                MessageType::Acknowledgement,
                req.header.message_id,
                MessageClass::Response(ResponseType::Changed),
            )],
        })
        .await;
        let response = client.request(post()).await.unwrap();
        assert_eq!(response.code, ResponseType::Changed);
        assert_eq!(stats.retransmitted.get(), 1);
        let got = server.await.unwrap();
        // The same message twice: one ID, one token; nothing after the answer.
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].header.message_id, got[1].header.message_id);
        assert_eq!(got[0].get_token(), got[1].get_token());
    }

    #[tokio::test]
    async fn a_request_never_answered_fails_after_max_retransmit() {
        let (client, stats, server) = client_and_server(|_, _| vec![]).await;
        let started = std::time::Instant::now();
        let result = client.request(post()).await;
        assert_eq!(result, Err(ExchangeError::Timeout(2)));
        // 40-60 ms, then twice and four times that: at least 280 ms.
        assert!(started.elapsed() >= Duration::from_millis(280));
        assert_eq!(stats.retransmitted.get(), 2);
        assert_eq!(server.await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn after_an_empty_ack_the_separate_answer_is_awaited_and_acknowledged() {
        let (client, stats, server) = client_and_server(|n, req| match n {
            // An empty ACK now; the answer as a confirmable message of its own.
            0 => vec![
                answer(
                    req,
                    MessageType::Acknowledgement,
                    req.header.message_id,
                    MessageClass::Empty,
                ),
                answer(
                    req,
                    MessageType::Confirmable,
                    0x7777,
                    MessageClass::Response(ResponseType::Changed),
                ),
            ],
            _ => vec![],
        })
        .await;
        let response = client.request(post()).await.unwrap();
        assert_eq!(response.payload, b"stored");
        let got = server.await.unwrap();
        // No retransmission after the empty ACK, and the separate answer was acknowledged.
        assert_eq!(stats.retransmitted.get(), 0);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1].header.get_type(), MessageType::Acknowledgement);
        assert_eq!(got[1].header.message_id, 0x7777);
    }

    /// Two requests from each of `slots` slots, then done; counts the answers it saw.
    struct Twice {
        left: Vec<u32>,
        answers: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Driver for Twice {
        fn slots(&self) -> usize {
            self.left.len()
        }
        fn next(&mut self, slot: usize, ended: Option<Result<Response, ExchangeError>>) -> Step {
            if let Some(Ok(_)) = ended {
                self.answers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if self.left[slot] == 0 {
                return Step::Done;
            }
            self.left[slot] -= 1;
            Step::Send(post())
        }
    }

    /// Runs [`Twice`] over three slots against `addr`, taking source ports as `ports` says; the
    /// answers it saw and the stats.
    async fn three_slots_twice(addr: SocketAddr, ports: SourcePort) -> (usize, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let answers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let driver = Twice {
            left: vec![2; 3],
            answers: answers.clone(),
        };
        drive(addr, FAST, stats.clone(), Box::new(driver), None, ports)
            .await
            .unwrap();
        (answers.load(std::sync::atomic::Ordering::Relaxed), stats)
    }

    #[tokio::test]
    async fn a_driver_runs_its_slots_to_the_end_without_a_retransmission() {
        let (addr, server) = scripted_server(changed).await;
        let (answers, stats) = three_slots_twice(addr, SourcePort::Kept).await;
        assert_eq!(answers, 6);
        // The first requests go out at once: none waits for a retransmission timer.
        assert_eq!(stats.retransmitted.get(), 0);
        assert_eq!(stats.sent.get(), 6);
        assert_eq!(server.await.unwrap().len(), 6);
    }

    #[tokio::test]
    async fn with_a_new_port_per_exchange_each_exchange_has_a_socket_of_its_own() {
        let (addr, server) = recording_server(changed).await;
        // Three slots wanting to send at once: they take turns, one socket at a time.
        let (answers, stats) = three_slots_twice(addr, SourcePort::PerExchange).await;
        assert_eq!(answers, 6);
        assert_eq!(
            (stats.retransmitted.get(), stats.source_ports.get()),
            (0, 6)
        );
        let got = server.await.unwrap();
        let ports: std::collections::HashSet<u16> =
            got.iter().map(|(_, peer)| peer.port()).collect();
        assert_eq!((got.len(), ports.len()), (6, 6), "{got:?}");
    }

    #[test]
    fn the_initial_timeout_is_within_the_rfc_bounds() {
        let p = Transmission::default();
        for _ in 0..1000 {
            let t = p.initial_timeout();
            assert!(
                t >= Duration::from_secs(2) && t <= Duration::from_secs(3),
                "{t:?}"
            );
        }
    }

    #[test]
    fn max_transmit_wait_matches_rfc_7252() {
        assert_eq!(
            Transmission::default().max_transmit_wait(),
            Duration::from_secs(93)
        );
    }

    #[test]
    fn requests_are_confirmable_with_an_eight_byte_token() {
        let req = Request {
            method: RequestType::Post,
            path: &["sensors", "dht", "temperature"],
            query: vec!["place=room1".into()],
            payload: b"21.5".to_vec(),
        };
        let bytes = encode(&req, 7, 0x0102030405060708).unwrap();
        let p = Packet::from_bytes(&bytes).unwrap();
        assert_eq!(p.header.get_type(), MessageType::Confirmable);
        assert_eq!(p.header.message_id, 7);
        assert_eq!(p.get_token(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            token_of(&Message::parse(&bytes).unwrap()),
            Some(0x0102030405060708)
        );
        assert_eq!(p.payload, b"21.5");
        let uri: Vec<&[u8]> = p
            .get_option(coap_lite::CoapOption::UriPath)
            .unwrap()
            .iter()
            .map(|s| s.as_slice())
            .collect();
        assert_eq!(uri, [&b"sensors"[..], b"dht", b"temperature"]);
        let huge = Request {
            payload: vec![b'1'; 2000],
            ..req
        };
        assert!(matches!(encode(&huge, 8, 1), Err(ExchangeError::Encode(_))));
    }
}
