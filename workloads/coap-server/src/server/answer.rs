//! The answers: encoding a CoAP response, and sending it at once (rejections, duplicates,
//! shed load) or once a reading's batch has been written ([`on_written`]).

use std::net::SocketAddr;
use std::sync::Arc;

use coap_lite::{CoapOption, ContentFormat, MessageClass, MessageType, Packet, ResponseType};
use iot_common::WriteError;
use iot_common::batch::OnWritten;

use super::Shared;
use crate::dedup::{ExchangeId, Outcome};
use crate::resource::{Reading, Reply};

/// What the writer needs to answer a reading once its batch is written.
pub struct PendingAnswer {
    pub(super) peer: SocketAddr,
    pub(super) exchange: ExchangeId,
    pub(super) confirmable: bool,
    pub(super) message_id: u16,
    pub(super) token: Vec<u8>,
    pub(super) message: String,
}

/// Builds an answer datagram. Never fails for the packets built here (options and token are
/// within limits); an encoding error is logged and nothing is sent.
fn encode(
    kind: MessageType,
    mid: u16,
    token: &[u8],
    code: ResponseType,
    payload: &[u8],
    content_format: Option<ContentFormat>,
    max_age: Option<u32>,
) -> Option<Vec<u8>> {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(kind);
    p.header.message_id = mid;
    p.header.code = MessageClass::Response(code);
    p.set_token(token.to_vec());
    if let Some(cf) = content_format {
        p.set_content_format(cf);
    }
    if let Some(secs) = max_age {
        p.add_option(CoapOption::MaxAge, encode_uint(secs));
    }
    p.payload = payload.to_vec();
    match p.to_bytes() {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode answer");
            None
        }
    }
}

/// CoAP uint option: big-endian without leading zero bytes.
fn encode_uint(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count();
    b[skip..].to_vec()
}

pub(super) fn send_reset(shared: &Shared, mid: u16, peer: SocketAddr) {
    // An empty RST: version 1, type 3, no token, code 0.00, the message's ID.
    let [hi, lo] = mid.to_be_bytes();
    shared.send(vec![0x70, 0x00, hi, lo], peer);
}

/// A response's code and payload, sent as an ACK of a confirmable request or as a NON of its
/// own.
struct Response<'a> {
    code: ResponseType,
    payload: &'a [u8],
    content_format: Option<ContentFormat>,
    max_age: Option<u32>,
}

fn respond(
    shared: &Shared,
    confirmable: bool,
    mid: u16,
    token: &[u8],
    response: Response<'_>,
    peer: SocketAddr,
) {
    let (kind, mid) = shared.answer_mid(confirmable, mid);
    if let Some(b) = encode(
        kind,
        mid,
        token,
        response.code,
        response.payload,
        response.content_format,
        response.max_age,
    ) {
        shared.send(b, peer);
    }
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
        payload: reply.payload.as_bytes(),
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
        payload: message.as_bytes(),
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
    message: &str,
    peer: SocketAddr,
) {
    let response = Response {
        code: ResponseType::Changed,
        payload: message.as_bytes(),
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
        Outcome::Stored => send_stored(
            shared,
            confirmable,
            mid,
            token,
            &reading.stored_message(),
            peer,
        ),
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
                        &a.message,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_encoded_as_a_minimal_uint() {
        assert_eq!(encode_uint(0), Vec::<u8>::new());
        assert_eq!(encode_uint(5), vec![5]);
        assert_eq!(encode_uint(300), vec![1, 44]);
    }
}
