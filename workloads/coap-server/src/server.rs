//! The UDP side: receives datagrams, answers what can be answered at once, hands readings to the
//! batching writer; [`answer`] answers them when their batch has been written.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use coap_lite::{MessageClass, MessageType};
use iot_common::coap::Message;
use iot_common::udp::{Datagrams, Inbox, Outbox};
use iot_common::{BatchWriter, Line, SubmitError};

use crate::cardinality::NewTags;
use crate::dedup::{DedupCache, Outcome, Seen};
use crate::devices::Device;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimit;
use crate::resource::{self, Action, Clock, Reading, Reply};
use crate::secure::Sessions;

mod answer;

pub(crate) use self::answer::{PendingAnswer, on_written};
use self::answer::{To, Token, answer_duplicate, send_reply, send_reset, send_unavailable};

/// Receive buffers per system call: up to this many datagrams, or bursts coalesced by the
/// kernel, per `recvmmsg`.
const RECV_BATCH: usize = 32;

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) default_place: String,
    /// Max-Age of a 5.03 answer: when the client should try again, in seconds.
    pub(crate) retry_after_secs: u32,
    /// How long the database keeps points, when it does not keep them forever.
    pub(crate) retention_ms: Option<i64>,
    /// Requests per second per source address (0: no limit), and how many at once.
    pub(crate) rate_limit: u32,
    pub(crate) rate_burst: u32,
}

/// Where an answer goes: a peer's address, and whether through its DTLS session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) addr: SocketAddr,
    pub(crate) secure: bool,
}

impl Route {
    fn plain(addr: SocketAddr) -> Route {
        Route {
            addr,
            secure: false,
        }
    }
}

/// The DTLS socket and its sessions.
pub(crate) struct SecureSide {
    pub(crate) datagrams: Datagrams,
    pub(crate) sessions: Mutex<Sessions>,
    /// Answers to devices, sealed by their sessions at the next flush.
    pending: Mutex<Vec<(SocketAddr, Vec<u8>)>>,
    /// Sealed datagrams waiting to go out together. Locked after `sessions`, never before.
    outbox: Mutex<Outbox>,
}

impl SecureSide {
    pub(crate) fn new(datagrams: Datagrams, sessions: Sessions) -> Self {
        SecureSide {
            datagrams,
            sessions: Mutex::new(sessions),
            pending: Mutex::new(Vec::new()),
            outbox: Mutex::new(Outbox::ordered()),
        }
    }
}

/// State shared by the receive loops and the writer's completion callback.
pub(crate) struct Shared {
    /// Plaintext CoAP, unless it is closed.
    datagrams: Option<Datagrams>,
    /// Answers waiting to go out together: those of one received batch, or of one written one.
    outbox: Mutex<Outbox>,
    /// `coaps://`, when devices are registered.
    secure: Option<SecureSide>,
    dedup: Mutex<DedupCache>,
    /// New tag values from anonymous senders, counted.
    new_tags: Mutex<NewTags>,
    metrics: Metrics,
    settings: Settings,
    /// Message IDs for NON answers, which carry their own ID (RFC 7252 §4.3).
    next_mid: AtomicU16,
    /// The last timestamp handed out, so that no two readings share one (see `timestamp`).
    last_ts: AtomicI64,
    ready: iot_common::http::Readiness,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        datagrams: Option<Datagrams>,
        secure: Option<SecureSide>,
        dedup: DedupCache,
        mut new_tags: NewTags,
        metrics: Metrics,
        settings: Settings,
        ready: iot_common::http::Readiness,
    ) -> Arc<Self> {
        new_tags.learn_place(&settings.default_place);
        Arc::new(Shared {
            datagrams,
            outbox: Mutex::new(Outbox::default()),
            secure,
            dedup: Mutex::new(dedup),
            new_tags: Mutex::new(new_tags),
            metrics,
            settings,
            next_mid: AtomicU16::new(rand_u16()),
            last_ts: AtomicI64::new(0),
            ready,
        })
    }

    pub(crate) fn answer_counts(&self) -> crate::report::AnswerCounts {
        self.metrics.answers.clone()
    }

    fn dedup(&self) -> MutexGuard<'_, DedupCache> {
        lock(&self.dedup)
    }

    /// The tag values the database holds already, so that they do not count as new.
    pub(crate) fn learn_tags<'v>(
        &self,
        places: impl IntoIterator<Item = &'v str>,
        sensors: impl IntoIterator<Item = &'v str>,
    ) {
        let mut tags = lock(&self.new_tags);
        places.into_iter().for_each(|p| tags.learn_place(p));
        sensors.into_iter().for_each(|s| tags.learn_sensor(s));
    }

    /// Receive time in nanoseconds, made unique: InfluxDB keeps one point per series and
    /// timestamp, so two readings in the same nanosecond would overwrite each other. Every
    /// reading this process stores gets a strictly larger timestamp than the one before.
    fn timestamp(&self) -> i64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut last = self.last_ts.load(Ordering::Relaxed);
        loop {
            let ts = now.max(last + 1);
            match self
                .last_ts
                .compare_exchange_weak(last, ts, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return ts,
                Err(actual) => last = actual,
            }
        }
    }

    /// Queues an answer; [`Shared::flush`] sends it with the others of its batch.
    fn send(&self, bytes: Vec<u8>, peer: Route) {
        if peer.secure {
            lock(&self.secure_side().pending).push((peer.addr, bytes));
        } else {
            lock(&self.outbox).push(peer.addr, bytes);
        }
    }

    fn secure_side(&self) -> &SecureSide {
        // A secure route only comes from the secure side's receive loop.
        self.secure
            .as_ref()
            .unwrap_or_else(|| unreachable!("a DTLS answer without a DTLS side"))
    }

    /// Sends the queued answers. Never waits (so holding the lock meanwhile is brief): a full
    /// socket buffer drops answers, and the client's retransmission then gets its answer from
    /// the dedup cache.
    fn flush(&self) {
        if let Some(datagrams) = &self.datagrams {
            let mut outbox = lock(&self.outbox);
            if !outbox.is_empty() {
                let dropped = datagrams.try_send(&mut outbox);
                self.metrics.send_errors.inc_by(dropped as u64);
            }
        }
        if let Some(secure) = &self.secure {
            let pending = std::mem::take(&mut *lock(&secure.pending));
            let mut sessions = lock(&secure.sessions);
            let mut outbox = lock(&secure.outbox);
            for (peer, message) in pending {
                if !sessions.seal(peer, &message, &mut outbox) {
                    self.metrics.dtls_answers_without_session.inc();
                }
            }
            drop(sessions);
            if !outbox.is_empty() {
                let dropped = secure.datagrams.try_send(&mut outbox);
                self.metrics.send_errors.inc_by(dropped as u64);
            }
        }
    }

    fn answer_mid(&self, confirmable: bool, request_mid: u16) -> (MessageType, u16) {
        if confirmable {
            (MessageType::Acknowledgement, request_mid)
        } else {
            (
                MessageType::NonConfirmable,
                self.next_mid.fetch_add(1, Ordering::Relaxed),
            )
        }
    }

    fn unavailable_message(&self) -> String {
        format!(
            "InfluxDB is unavailable; try again in {} s",
            self.settings.retry_after_secs
        )
    }
}

/// A panic while holding one of these locks cannot leave the data inconsistent in a way that
/// matters more than losing the server, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rand_u16() -> u16 {
    // Not security relevant: RFC 7252 only asks that message IDs not start predictably.
    (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16
}

/// The receive loops, plaintext and DTLS, whichever are open; returns when `shutdown` resolves.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    writer: &BatchWriter<PendingAnswer>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let plain = async {
        match &shared.datagrams {
            Some(datagrams) => serve_plain(&shared, datagrams, writer).await,
            None => std::future::pending().await,
        }
    };
    let secure = async {
        match &shared.secure {
            Some(side) => serve_secure(&shared, side, writer).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = plain => {}
        () = secure => {}
        () = shutdown => {}
    }
}

/// Plaintext CoAP: every datagram is a message from an anonymous sender.
async fn serve_plain(shared: &Shared, datagrams: &Datagrams, writer: &BatchWriter<PendingAnswer>) {
    let mut inbox = Inbox::new(RECV_BATCH);
    let mut limit = RateLimit::new(shared.settings.rate_limit, shared.settings.rate_burst);
    loop {
        if let Err(e) = datagrams.recv(&mut inbox).await {
            // ICMP errors from earlier sends surface here on some systems; keep going.
            tracing::debug!(error = %e, "receive failed");
            continue;
        }
        for (datagram, peer) in inbox.datagrams() {
            if admit(shared, &mut limit, peer) {
                handle_datagram(shared, writer, datagram, Route::plain(peer), None);
            }
        }
        shared.flush();
    }
}

/// Counts a received datagram; false when the per-source rate limit drops it, unanswered: an
/// answer is what a forged source is after.
fn admit(shared: &Shared, limit: &mut Option<RateLimit>, peer: SocketAddr) -> bool {
    shared.metrics.received.inc();
    if let Some(limit) = limit
        && !limit.allow(peer.ip())
    {
        shared.metrics.rate_limited.inc();
        return false;
    }
    true
}

/// DTLS: datagrams go through their peer's session; the CoAP messages of an established one
/// come from its device.
async fn serve_secure(shared: &Shared, side: &SecureSide, writer: &BatchWriter<PendingAnswer>) {
    let mut inbox = Inbox::new(RECV_BATCH);
    let mut limit = RateLimit::new(shared.settings.rate_limit, shared.settings.rate_burst);
    let mut received = Vec::new();
    // Sessions are looked after even while no datagram comes: a revoked device's session ends,
    // idle ones give back their buffers.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            r = side.datagrams.recv(&mut inbox) => if let Err(e) = r {
                tracing::debug!(error = %e, "receive failed");
                continue;
            },
            _ = tick.tick() => {
                lock(&side.sessions).maintain(std::time::Instant::now());
                continue;
            }
        }
        let now = std::time::Instant::now();
        {
            let mut sessions = lock(&side.sessions);
            let mut outbox = lock(&side.outbox);
            for (datagram, peer) in inbox.datagrams() {
                if !admit(shared, &mut limit, peer) {
                    continue;
                }
                if let Some(r) = sessions.receive(peer, datagram, now, &mut outbox) {
                    received.push((peer, r));
                }
            }
        }
        for (peer, r) in received.drain(..) {
            let route = Route {
                addr: peer,
                secure: true,
            };
            for message in &r.messages {
                handle_datagram(shared, writer, message, route, Some(&r.device));
            }
        }
        shared.flush();
    }
}

fn handle_datagram(
    shared: &Shared,
    writer: &BatchWriter<PendingAnswer>,
    datagram: &[u8],
    peer: Route,
    device: Option<&Device>,
) {
    // RFC 7252 §3: shorter than a header, or another version: silently ignored.
    if datagram.len() < 4 || datagram[0] >> 6 != 1 {
        shared.metrics.malformed("header");
        return;
    }
    let confirmable = (datagram[0] >> 4) & 0b11 == 0;
    let mid = u16::from_be_bytes([datagram[2], datagram[3]]);
    let message = match Message::parse(datagram) {
        Ok(m) => m,
        Err(e) => {
            tracing::trace!(error = %e, peer = %peer.addr, "malformed message");
            // §4.2: a confirmable message with a format error is rejected with RST; anything
            // else malformed is silently ignored.
            shared.metrics.malformed("format");
            if confirmable {
                send_reset(shared, mid, peer);
            }
            return;
        }
    };
    match (message.kind, message.class) {
        (MessageType::Acknowledgement | MessageType::Reset, _) => {
            // The server sends no confirmable messages, so there is nothing to match.
            shared.metrics.malformed("unexpected_ack_or_reset");
        }
        (MessageType::Confirmable, MessageClass::Empty) => {
            // A "CoAP ping" (§4.3): answered with RST.
            send_reset(shared, mid, peer);
        }
        (_, MessageClass::Request(_)) => {
            handle_request(shared, writer, &message, datagram, peer, device)
        }
        (t, _) => {
            shared.metrics.malformed("not_a_request");
            if t == MessageType::Confirmable {
                send_reset(shared, mid, peer);
            }
        }
    }
}

fn handle_request(
    shared: &Shared,
    writer: &BatchWriter<PendingAnswer>,
    req: &Message<'_>,
    datagram: &[u8],
    peer: Route,
    device: Option<&Device>,
) {
    let confirmable = req.kind == MessageType::Confirmable;
    let mid = req.message_id;
    let to = To {
        peer,
        confirmable,
        message_id: mid,
        token: req.token,
        request_len: datagram.len(),
    };
    let clock = Clock {
        now_ms: unix_ms(),
        retention_ms: shared.settings.retention_ms,
    };
    // A device's readings default to its registered place.
    let default_place = device.map_or(shared.settings.default_place.as_str(), |d| &d.place);
    let action = resource::handle(req, default_place, clock);
    let mut reading = match action {
        Action::Reply(reply) => {
            if let Some(reason) = reply.reason {
                shared.metrics.reject(reason);
            }
            send_reply(shared, to, &reply);
            return;
        }
        Action::Store(reading) => reading,
    };
    if let Some(device) = device {
        if let Err(reply) = as_device(&mut reading, device) {
            shared.metrics.device_tags_refused.inc();
            shared.metrics.reject("device_tags");
            send_reply(shared, to, &reply);
            return;
        }
    } else if let Err(refusal) =
        lock(&shared.new_tags).admit(peer.addr.ip(), reading.place, reading.sensor)
    {
        shared.metrics.reject(refusal.reason());
        let reply = Reply {
            code: coap_lite::ResponseType::Forbidden,
            payload: refusal.message(),
            content_format: Some(coap_lite::ContentFormat::TextPlain),
            reason: Some(refusal.reason()),
        };
        send_reply(shared, to, &reply);
        return;
    }
    let exchange = {
        let mut dedup = shared.dedup();
        let id = match device {
            // A device's exchanges are its own whatever its address: a retransmission after a
            // new handshake (a new port) is still recognised.
            Some(d) => dedup.device_id(&d.name, mid, datagram),
            None => dedup.id(peer.addr, mid, datagram),
        };
        match dedup.check(id) {
            Seen::New => id,
            Seen::Duplicate(outcome) => {
                drop(dedup);
                shared.metrics.duplicates.inc();
                answer_duplicate(shared, to, &reading, outcome);
                return;
            }
        }
    };
    let ts = match reading.taken_at_ms {
        Some(ms) => ms.saturating_mul(1_000_000),
        None => shared.timestamp(),
    };
    let line = to_line(&reading, ts);
    let answer = PendingAnswer {
        peer,
        exchange,
        confirmable,
        message_id: mid,
        token: Token::from_slice(req.token),
        request_len: u16::try_from(datagram.len()).unwrap_or(u16::MAX),
        stored: reading.stored(),
    };
    match writer.try_submit(line, answer) {
        Ok(()) => {}
        Err(e) => {
            // Shed load rather than queue without bound: the client will come back.
            let reason = match e {
                SubmitError::Full => "queue_full",
                SubmitError::Closed => "shutting_down",
            };
            shared.metrics.unavailable(reason);
            shared.dedup().complete(exchange, Outcome::Unavailable);
            send_unavailable(shared, to);
        }
    }
}

/// Holds a device's reading to its registry entry: the query may repeat the device's own
/// `sensor` and `place` but not contradict them (4.03, nothing stored); the reading is stored
/// as the device.
fn as_device<'r>(reading: &mut Reading<'r>, device: &'r Device) -> Result<(), Reply> {
    let forged_sensor = reading.sensor.is_some_and(|s| s != &*device.name);
    if forged_sensor || reading.place != &*device.place {
        return Err(Reply {
            code: coap_lite::ResponseType::Forbidden,
            payload: format!(
                "device {} writes as sensor={} place={} only",
                device.name, device.name, device.place
            ),
            content_format: Some(coap_lite::ContentFormat::TextPlain),
            reason: Some("device_tags"),
        });
    }
    reading.sensor = Some(&device.name);
    Ok(())
}

fn to_line(r: &Reading, ts: i64) -> String {
    let mut s = String::with_capacity(80);
    let line = Line::new(&mut s, r.measurement.name()).tag("place", r.place);
    let line = match &r.sensor {
        Some(sensor) => line.tag("sensor", sensor),
        None => line,
    };
    line.field_f64("value", r.value).finish(ts);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_become_line_protocol_with_their_tags() {
        let r = Reading {
            measurement: resource::Measurement::Temperature,
            value: 21.5,
            place: "room1",
            sensor: Some("dht-1"),
            taken_at_ms: None,
        };
        assert_eq!(
            to_line(&r, 42),
            "temperature,place=room1,sensor=dht-1 value=21.5 42\n"
        );
    }
}
