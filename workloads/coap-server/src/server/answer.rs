//! The answers: encoding a CoAP response, and sending it at once (rejections, duplicates,
//! shed load) or once a reading's batch has been written ([`on_written`]).

use std::fmt::Display;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use coap_lite::{ContentFormat, Header, MessageClass, MessageType, ResponseType};
use iot_common::WriteError;
use iot_common::batch::OnWritten;
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

/// CoAP option numbers (RFC 7252 §5.10).
const CONTENT_FORMAT: u16 = 12;
const MAX_AGE: u16 = 14;

/// Encodes an answer datagram (RFC 7252 §3): header, token, options in ascending order, then
/// the payload after its marker. Written here rather than through coap-lite's `Packet`, whose
/// option map, lists and vectors cost about eight allocations per answer, where this costs one
/// (the datagram); the tests decode every shape with coap-lite.
fn encode(
    kind: MessageType,
    mid: u16,
    token: &[u8],
    code: ResponseType,
    payload: impl Display,
    content_format: Option<ContentFormat>,
    max_age: Option<u32>,
) -> Vec<u8> {
    let mut header = Header::new();
    header.set_version(1);
    header.set_type(kind);
    header.set_token_length(token.len() as u8);
    header.code = MessageClass::Response(code);
    header.message_id = mid;
    let mut out = Vec::with_capacity(64);
    // Cannot fail: the buffer has room for the 4 bytes.
    let _ = header.to_raw().serialize_into(&mut out);
    out.extend_from_slice(token);
    let mut previous = 0;
    if let Some(cf) = content_format {
        push_uint_option(
            &mut out,
            &mut previous,
            CONTENT_FORMAT,
            usize::from(cf) as u32,
        );
    }
    if let Some(secs) = max_age {
        push_uint_option(&mut out, &mut previous, MAX_AGE, secs);
    }
    let marker = out.len();
    out.push(0xFF);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{payload}");
    if out.len() == marker + 1 {
        out.pop(); // no payload, no marker (§3)
    }
    out
}

/// Appends an option whose value is a uint (big-endian, no leading zero bytes: §3.2) after
/// option number `previous`. Deltas and lengths here are below 13, so the option header is
/// one byte; larger ones are encoded as §3.1 says all the same.
fn push_uint_option(out: &mut Vec<u8>, previous: &mut u16, number: u16, value: u32) {
    let bytes = value.to_be_bytes();
    let value = &bytes[bytes.iter().take_while(|&&b| b == 0).count()..];
    let delta = number - *previous;
    *previous = number;
    let (delta_nibble, delta_ext) = extended(delta);
    let (length_nibble, length_ext) = extended(value.len() as u16);
    out.push(delta_nibble << 4 | length_nibble);
    out.extend_from_slice(&delta_ext);
    out.extend_from_slice(&length_ext);
    out.extend_from_slice(value);
}

/// An option delta or length as its 4-bit nibble and extended bytes (§3.1).
fn extended(n: u16) -> (u8, SmallVec<[u8; 2]>) {
    match n {
        0..=12 => (n as u8, SmallVec::new()),
        13..=268 => (13, SmallVec::from_slice(&[(n - 13) as u8])),
        _ => (14, SmallVec::from_slice(&(n - 269).to_be_bytes())),
    }
}

pub(super) fn send_reset(shared: &Shared, mid: u16, peer: SocketAddr) {
    // An empty RST: version 1, type 3, no token, code 0.00, the message's ID.
    let [hi, lo] = mid.to_be_bytes();
    shared.send(vec![0x70, 0x00, hi, lo], peer);
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
    let datagram = encode(
        kind,
        mid,
        token,
        response.code,
        response.payload,
        response.content_format,
        response.max_age,
    );
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

#[cfg(test)]
mod tests {
    use coap_lite::{CoapOption, Packet};

    use super::*;

    fn decode(datagram: &[u8]) -> Packet {
        Packet::from_bytes(datagram).expect("coap-lite decodes it")
    }

    #[test]
    fn a_stored_answer_decodes_with_coap_lite() {
        let token = [1, 2, 3, 4, 5, 6, 7, 8];
        let bytes = encode(
            MessageType::Acknowledgement,
            0xBEEF,
            &token,
            ResponseType::Changed,
            "Temperature=21.5 saved successfully!",
            Some(ContentFormat::TextPlain),
            None,
        );
        let p = decode(&bytes);
        assert_eq!(p.header.get_version(), 1);
        assert_eq!(p.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(p.header.message_id, 0xBEEF);
        assert_eq!(p.get_token(), token);
        assert_eq!(p.header.code, MessageClass::Response(ResponseType::Changed));
        assert_eq!(p.get_content_format(), Some(ContentFormat::TextPlain));
        assert_eq!(p.payload, b"Temperature=21.5 saved successfully!");
        // text/plain is 0: an empty uint (§3.2), one option byte, as coap-lite writes it too.
        let mut reference = Packet::new();
        reference.header.set_version(1);
        reference.header.set_type(MessageType::Acknowledgement);
        reference.header.message_id = 0xBEEF;
        reference.header.code = MessageClass::Response(ResponseType::Changed);
        reference.set_token(token.to_vec());
        reference.set_content_format(ContentFormat::TextPlain);
        reference.payload = b"Temperature=21.5 saved successfully!".to_vec();
        assert_eq!(bytes, reference.to_bytes().expect("encodes"));
    }

    #[test]
    fn max_age_follows_content_format_as_a_minimal_uint() {
        for (secs, encoded) in [(0u32, vec![]), (5, vec![5]), (300, vec![1, 44])] {
            let bytes = encode(
                MessageType::NonConfirmable,
                7,
                &[],
                ResponseType::ServiceUnavailable,
                "InfluxDB is unavailable",
                Some(ContentFormat::TextPlain),
                Some(secs),
            );
            let p = decode(&bytes);
            assert_eq!(p.get_token(), &[] as &[u8]);
            assert_eq!(
                p.get_first_option(CoapOption::MaxAge),
                Some(&encoded),
                "{secs} s"
            );
            assert_eq!(p.get_content_format(), Some(ContentFormat::TextPlain));
            assert_eq!(p.payload, b"InfluxDB is unavailable");
        }
    }

    #[test]
    fn an_empty_payload_has_no_marker() {
        let bytes = encode(
            MessageType::Acknowledgement,
            1,
            &[9],
            ResponseType::NotFound,
            "",
            None,
            None,
        );
        assert_eq!(bytes, [0x61, 0x84, 0x00, 0x01, 9]);
        assert_eq!(decode(&bytes).payload, b"");
    }

    #[test]
    fn long_option_deltas_and_lengths_use_the_extended_forms() {
        assert_eq!(extended(12), (12, SmallVec::new()));
        assert_eq!(extended(13), (13, SmallVec::from_slice(&[0])));
        assert_eq!(extended(268), (13, SmallVec::from_slice(&[255])));
        assert_eq!(extended(269), (14, SmallVec::from_slice(&[0, 0])));
        let mut out = Vec::new();
        let mut previous = 0;
        push_uint_option(&mut out, &mut previous, 60, 1); // Size1, delta 60
        assert_eq!(out, [0xD1, 60 - 13, 1]);
        assert_eq!(previous, 60);
    }
}
