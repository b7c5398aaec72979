//! The answers: encoding a CoAP response, and sending it at once (rejections, duplicates,
//! shed load) or once a reading's batch has been written ([`on_written`]).
//!
//! No reflector (RFC 7252 §11.3): a non-confirmable request may come from a forged address, so
//! its answer is never more than [`AMPLIFICATION`] times its size. It carries no error details,
//! and other payloads only where they fit; an answer whose payload is the point (the resource
//! list) is refused with RST instead. A confirmable request gets the whole answer.

use std::fmt::Display;
use std::sync::Arc;

use coap_lite::{ContentFormat, MessageClass, MessageType, ResponseType};
use iot_common::WriteError;
use iot_common::batch::{OnWritten, Written};
use iot_common::coap::{self, Encoder, option};
use iot_common::verdict::refusal_reason;
use smallvec::SmallVec;

use super::{Route, Shared};
use crate::dedup::{ExchangeId, Outcome};
use crate::resource::{Reading, Reply, Stored};

/// Bytes an answer to a non-confirmable request may have, per byte of the request.
pub(crate) const AMPLIFICATION: usize = 3;

/// A request's token: at most 8 bytes (RFC 7252 §5.3.1; `Message::parse` refuses longer ones), so
/// it is kept inline.
pub(crate) type Token = SmallVec<[u8; 8]>;

/// Whom an answer goes to, and what it answers.
#[derive(Clone, Copy)]
pub(super) struct To<'t> {
    pub(super) peer: Route,
    pub(super) confirmable: bool,
    pub(super) message_id: u16,
    pub(super) token: &'t [u8],
    /// The request's size in bytes, which bounds a non-confirmable answer.
    pub(super) request_len: usize,
}

/// What the writer needs to answer a reading once its batch is written; nothing on the heap.
pub(crate) struct PendingAnswer {
    pub(super) peer: Route,
    pub(super) exchange: ExchangeId,
    pub(super) confirmable: bool,
    pub(super) message_id: u16,
    pub(super) token: Token,
    pub(super) request_len: u16,
    pub(super) stored: Stored,
}

impl PendingAnswer {
    fn to(&self) -> To<'_> {
        To {
            peer: self.peer,
            confirmable: self.confirmable,
            message_id: self.message_id,
            token: &self.token,
            request_len: usize::from(self.request_len),
        }
    }
}

pub(super) fn send_reset(shared: &Shared, mid: u16, peer: Route) {
    shared.send(coap::empty(MessageType::Reset, mid), peer);
}

/// A response's code and payload, sent as an ACK of a confirmable request or as a NON of its
/// own.
struct Response<P> {
    code: ResponseType,
    payload: P,
    content_format: Option<ContentFormat>,
    max_age: Option<u32>,
}

fn respond(shared: &Shared, to: To<'_>, response: Response<impl Display>) {
    let (kind, mid) = shared.answer_mid(to.confirmable, to.message_id);
    let encode = |with_payload: bool| {
        let class = MessageClass::Response(response.code);
        let mut message = Encoder::new(kind, class, mid, to.token);
        if let Some(cf) = response.content_format.filter(|_| with_payload) {
            message.uint_option(option::CONTENT_FORMAT, usize::from(cf) as u32);
        }
        if let Some(secs) = response.max_age {
            message.uint_option(option::MAX_AGE, secs);
        }
        if with_payload {
            message.payload(&response.payload)
        } else {
            message.payload("")
        }
    };
    if to.confirmable {
        shared.send(encode(true), to.peer);
        return;
    }
    let budget = to.request_len.saturating_mul(AMPLIFICATION);
    let is_error = !matches!(u8::from(MessageClass::Response(response.code)) >> 5, 2);
    if !is_error {
        let datagram = encode(true);
        if datagram.len() <= budget {
            shared.send(datagram, to.peer);
            return;
        }
        if response.code == ResponseType::Content {
            // Without its payload the answer would say something false (an empty list).
            shared.metrics.unamplified("reset");
            send_reset(shared, to.message_id, to.peer);
            return;
        }
    }
    shared.metrics.unamplified("no_payload");
    shared.send(encode(false), to.peer);
}

pub(super) fn send_reply(shared: &Shared, to: To<'_>, reply: &Reply) {
    let response = Response {
        code: reply.code,
        payload: &reply.payload,
        content_format: reply.content_format,
        max_age: None,
    };
    respond(shared, to, response);
}

/// 5.03 with Max-Age: when the client should try again.
pub(super) fn send_unavailable(shared: &Shared, to: To<'_>) {
    let message = shared.unavailable_message();
    let response = Response {
        code: ResponseType::ServiceUnavailable,
        payload: message,
        content_format: Some(ContentFormat::TextPlain),
        max_age: Some(shared.settings.retry_after_secs),
    };
    respond(shared, to, response);
}

/// 2.04 Changed: the reading is stored.
fn send_stored(shared: &Shared, to: To<'_>, stored: Stored) {
    let response = Response {
        code: ResponseType::Changed,
        payload: stored,
        content_format: Some(ContentFormat::TextPlain),
        max_age: None,
    };
    respond(shared, to, response);
}

/// 4.00: InfluxDB refused the reading for good; sending it again cannot store it.
fn send_refused(shared: &Shared, to: To<'_>, why: &str) {
    let response = Response {
        code: ResponseType::BadRequest,
        payload: format_args!(
            "InfluxDB refused the reading for good ({why}); do not send it again"
        ),
        content_format: Some(ContentFormat::TextPlain),
        max_age: None,
    };
    respond(shared, to, response);
}

pub(super) fn answer_duplicate(shared: &Shared, to: To<'_>, reading: &Reading, outcome: Outcome) {
    match outcome {
        // Still being written: the answer goes out when the write ends.
        Outcome::Pending => {}
        Outcome::Stored => send_stored(shared, to, reading.stored()),
        Outcome::Refused => send_refused(shared, to, "sent before"),
        Outcome::Unavailable => send_unavailable(shared, to),
    }
}

/// The writer's completion callback: answers readings that share a fate, together.
pub(crate) fn on_written(shared: Arc<Shared>) -> OnWritten<PendingAnswer> {
    Arc::new(move |answers: Vec<PendingAnswer>, written: Written<'_>| {
        let outcome = match written {
            Written::Stored => {
                shared.ready.set(true);
                shared.metrics.stored.inc_by(answers.len() as u64);
                Outcome::Stored
            }
            Written::Refused(_) => {
                shared
                    .metrics
                    .rejected
                    .get_or_create(&crate::metrics::Reason {
                        reason: "influx_refused",
                    })
                    .inc_by(answers.len() as u64);
                Outcome::Refused
            }
            Written::Unavailable(e) => {
                if matches!(
                    e,
                    WriteError::Unreachable { .. } | WriteError::Server { .. }
                ) {
                    shared.ready.set(false);
                }
                shared.metrics.unavailable(e.kind());
                Outcome::Unavailable
            }
        };
        {
            let mut dedup = shared.dedup();
            for a in &answers {
                dedup.complete(a.exchange, outcome);
            }
        }
        for a in &answers {
            match written {
                Written::Stored => send_stored(&shared, a.to(), a.stored),
                Written::Refused(e) => send_refused(&shared, a.to(), &refusal_reason(e)),
                Written::Unavailable(_) => send_unavailable(&shared, a.to()),
            }
        }
        shared.flush();
    })
}
