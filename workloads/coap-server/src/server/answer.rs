//! The answers: encoding a CoAP response, and sending it at once (rejections, duplicates,
//! shed load) or once a reading's batch has been written ([`on_written`]).

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;

use coap_lite::{ContentFormat, MessageClass, MessageType, ResponseType};
use iot_common::WriteError;
use iot_common::batch::OnWritten;
use iot_common::coap::{self, Encoder, option};
use smallvec::SmallVec;

use super::Shared;
use crate::dedup::{ExchangeId, Outcome};
use crate::resource::{Reading, Reply, Stored};

/// A request's token: at most 8 bytes (RFC 7252 §5.3.1; `Message::parse` refuses longer ones), so
/// it is kept inline.
pub type Token = SmallVec<[u8; 8]>;

/// What the writer needs to answer a reading once its batch is written; nothing on the heap.
pub struct PendingAnswer {
    pub(super) peer: SocketAddr,
    pub(super) exchange: ExchangeId,
    pub(super) confirmable: bool,
    pub(super) message_id: u16,
    pub(super) token: Token,
    pub(super) stored: Stored,
}

pub(super) fn send_reset(shared: &Shared, mid: u16, peer: SocketAddr) {
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

fn respond(
    shared: &Shared,
    confirmable: bool,
    mid: u16,
    token: &[u8],
    response: Response<impl Display>,
    peer: SocketAddr,
) {
    let (kind, mid) = shared.answer_mid(confirmable, mid);
    let mut message = Encoder::new(kind, MessageClass::Response(response.code), mid, token);
    if let Some(cf) = response.content_format {
        message.uint_option(option::CONTENT_FORMAT, usize::from(cf) as u32);
    }
    if let Some(secs) = response.max_age {
        message.uint_option(option::MAX_AGE, secs);
    }
    let datagram = message.payload(response.payload);
    shared.send(datagram, peer);
}

pub(super) fn send_reply(
    shared: &Shared,
    confirmable: bool,
    mid: u16,
    token: &[u8],
    reply: &Reply,
    peer: SocketAddr,
) {
    let response = Response {
        code: reply.code,
        payload: &reply.payload,
        content_format: reply.content_format,
        max_age: None,
    };
    respond(shared, confirmable, mid, token, response, peer);
}

/// 5.03 with Max-Age: when the client should try again.
pub(super) fn send_unavailable(
    shared: &Shared,
    confirmable: bool,
    mid: u16,
    token: &[u8],
    peer: SocketAddr,
) {
    let message = shared.unavailable_message();
    let response = Response {
        code: ResponseType::ServiceUnavailable,
        payload: message,
        content_format: Some(ContentFormat::TextPlain),
        max_age: Some(shared.settings.retry_after_secs),
    };
    respond(shared, confirmable, mid, token, response, peer);
}

/// 2.04 Changed: the reading is stored.
fn send_stored(
    shared: &Shared,
    confirmable: bool,
    mid: u16,
    token: &[u8],
    stored: Stored,
    peer: SocketAddr,
) {
    let response = Response {
        code: ResponseType::Changed,
        payload: stored,
        content_format: Some(ContentFormat::TextPlain),
        max_age: None,
    };
    respond(shared, confirmable, mid, token, response, peer);
}

pub(super) fn answer_duplicate(
    shared: &Shared,
    confirmable: bool,
    mid: u16,
    token: &[u8],
    reading: &Reading,
    outcome: Outcome,
    peer: SocketAddr,
) {
    match outcome {
        // Still being written: the answer goes out when the write ends.
        Outcome::Pending => {}
        Outcome::Stored => send_stored(shared, confirmable, mid, token, reading.stored(), peer),
        Outcome::Unavailable => send_unavailable(shared, confirmable, mid, token, peer),
    }
}

/// The writer's completion callback: answers every reading of a batch, together.
pub fn on_written(shared: Arc<Shared>) -> OnWritten<PendingAnswer> {
    Arc::new(
        move |answers: Vec<PendingAnswer>, result: Result<(), &WriteError>| {
            let stored = result.is_ok();
            match result {
                Ok(()) => {
                    shared.ready.set(true);
                    shared.metrics.stored.inc_by(answers.len() as u64);
                }
                Err(e) => {
                    if matches!(
                        e,
                        WriteError::Unreachable { .. } | WriteError::Server { .. }
                    ) {
                        shared.ready.set(false);
                    }
                    shared.metrics.unavailable(e.kind());
                }
            }
            {
                let mut dedup = shared.dedup();
                let outcome = if stored {
                    Outcome::Stored
                } else {
                    Outcome::Unavailable
                };
                for a in &answers {
                    dedup.complete(a.exchange, outcome);
                }
            }
            for a in answers {
                if stored {
                    send_stored(
                        &shared,
                        a.confirmable,
                        a.message_id,
                        &a.token,
                        a.stored,
                        a.peer,
                    );
                } else {
                    send_unavailable(&shared, a.confirmable, a.message_id, &a.token, a.peer);
                }
            }
            shared.flush();
        },
    )
}
