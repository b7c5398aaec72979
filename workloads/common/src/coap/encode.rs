//! A CoAP message written straight into its datagram (RFC 7252 §3): header, token, options in
//! ascending order, then the payload after its marker. One allocation, the datagram.

use std::fmt::Display;
use std::io::Write as _;

use coap_lite::{MessageClass, MessageType};
use smallvec::SmallVec;

/// Builds one message. Options must be pushed in ascending order of number, the token must be
/// at most 8 bytes and an option value at most 65,804 bytes (what the format can say); these
/// are the caller's to keep, checked in debug builds.
pub struct Encoder {
    out: Vec<u8>,
    previous: u16,
}

impl Encoder {
    pub fn new(kind: MessageType, class: MessageClass, message_id: u16, token: &[u8]) -> Self {
        debug_assert!(token.len() <= 8, "a token is at most 8 bytes");
        let kind_bits = match kind {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        };
        let mut out = Vec::with_capacity(64);
        // Version 1 (§3), the type, the token length.
        out.push(0x40 | kind_bits << 4 | (token.len() as u8 & 0x0F));
        out.push(u8::from(class));
        out.extend_from_slice(&message_id.to_be_bytes());
        out.extend_from_slice(token);
        Encoder { out, previous: 0 }
    }

    /// Appends an option after those pushed before (numbers ascending).
    pub fn option(&mut self, number: u16, value: &[u8]) -> &mut Self {
        debug_assert!(number >= self.previous, "options go in ascending order");
        debug_assert!(value.len() <= usize::from(u16::MAX) + 269);
        let delta = number - self.previous;
        self.previous = number;
        let (delta_nibble, delta_ext) = extended(delta);
        let (length_nibble, length_ext) = extended(value.len() as u16);
        self.out.push(delta_nibble << 4 | length_nibble);
        self.out.extend_from_slice(&delta_ext);
        self.out.extend_from_slice(&length_ext);
        self.out.extend_from_slice(value);
        self
    }

    /// Appends an option whose value is a uint: big-endian, no leading zero bytes (§3.2).
    pub fn uint_option(&mut self, number: u16, value: u32) -> &mut Self {
        let bytes = value.to_be_bytes();
        let zeros = bytes.iter().take_while(|&&b| b == 0).count();
        self.option(number, &bytes[zeros..])
    }

    /// The datagram, with `payload` written into it; no marker when it is empty (§3).
    pub fn payload(mut self, payload: impl Display) -> Vec<u8> {
        let marker = self.out.len();
        self.out.push(0xFF);
        // Writing into a Vec cannot fail.
        let _ = write!(self.out, "{payload}");
        if self.out.len() == marker + 1 {
            self.out.pop();
        }
        self.out
    }

    /// The datagram, with a payload of bytes.
    pub fn payload_bytes(mut self, payload: &[u8]) -> Vec<u8> {
        if !payload.is_empty() {
            self.out.push(0xFF);
            self.out.extend_from_slice(payload);
        }
        self.out
    }
}

/// An option delta or length as its 4-bit nibble and extended bytes (§3.1).
fn extended(n: u16) -> (u8, SmallVec<[u8; 2]>) {
    match n {
        0..=12 => (n as u8, SmallVec::new()),
        13..=268 => (13, SmallVec::from_slice(&[(n - 13) as u8])),
        _ => (14, SmallVec::from_slice(&(n - 269).to_be_bytes())),
    }
}

/// An empty message (code 0.00) of its own, no token: a RST, or the ACK of a separate answer.
pub fn empty(kind: MessageType, message_id: u16) -> Vec<u8> {
    Encoder::new(kind, MessageClass::Empty, message_id, &[]).payload_bytes(&[])
}

#[cfg(test)]
mod tests {
    use coap_lite::{CoapOption, ContentFormat, Packet, RequestType, ResponseType};

    use super::*;

    fn decode(datagram: &[u8]) -> Packet {
        Packet::from_bytes(datagram).expect("coap-lite decodes it")
    }

    fn changed(kind: MessageType, mid: u16, token: &[u8]) -> Encoder {
        Encoder::new(
            kind,
            MessageClass::Response(ResponseType::Changed),
            mid,
            token,
        )
    }

    #[test]
    fn an_answer_is_byte_for_byte_what_coap_lite_writes() {
        let token = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut e = changed(MessageType::Acknowledgement, 0xBEEF, &token);
        e.uint_option(12, 0);
        let bytes = e.payload("Temperature=21.5 saved successfully!");
        let mut reference = Packet::new();
        reference.header.set_version(1);
        reference.header.set_type(MessageType::Acknowledgement);
        reference.header.message_id = 0xBEEF;
        reference.header.code = MessageClass::Response(ResponseType::Changed);
        reference.set_token(token.to_vec());
        // text/plain is 0: an empty uint (§3.2), one option byte.
        reference.set_content_format(ContentFormat::TextPlain);
        reference.payload = b"Temperature=21.5 saved successfully!".to_vec();
        assert_eq!(bytes, reference.to_bytes().expect("encodes"));
    }

    #[test]
    fn a_request_is_byte_for_byte_what_coap_lite_writes() {
        let path = ["sensors", "dht", "temperature"];
        let query = ["place=lab", "sensor=dht-7"];
        let class = MessageClass::Request(RequestType::Post);
        let mut e = Encoder::new(MessageType::Confirmable, class, 7, &[9; 8]);
        for seg in path {
            e.option(11, seg.as_bytes());
        }
        for q in query {
            e.option(15, q.as_bytes());
        }
        let bytes = e.payload_bytes(b"21.5");
        let mut reference = Packet::new();
        reference.header.set_type(MessageType::Confirmable);
        reference.header.code = class;
        reference.header.message_id = 7;
        reference.set_token(vec![9; 8]);
        for seg in path {
            reference.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        for q in query {
            reference.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        reference.payload = b"21.5".to_vec();
        assert_eq!(bytes, reference.to_bytes().expect("encodes"));
    }

    #[test]
    fn max_age_follows_content_format_as_a_minimal_uint() {
        for (secs, encoded) in [(0u32, vec![]), (5, vec![5]), (300, vec![1, 44])] {
            let code = MessageClass::Response(ResponseType::ServiceUnavailable);
            let mut e = Encoder::new(MessageType::NonConfirmable, code, 7, &[]);
            e.uint_option(12, 0).uint_option(14, secs);
            let p = decode(&e.payload("InfluxDB is unavailable"));
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
        let code = MessageClass::Response(ResponseType::NotFound);
        let bytes = Encoder::new(MessageType::Acknowledgement, code, 1, &[9]).payload("");
        assert_eq!(bytes, [0x61, 0x84, 0x00, 0x01, 9]);
        assert_eq!(decode(&bytes).payload, b"");
        assert_eq!(empty(MessageType::Reset, 0x1234), [0x70, 0x00, 0x12, 0x34]);
        assert_eq!(
            empty(MessageType::Acknowledgement, 0x1234),
            [0x60, 0x00, 0x12, 0x34]
        );
    }

    #[test]
    fn long_option_deltas_and_lengths_use_the_extended_forms() {
        assert_eq!(extended(12), (12, SmallVec::new()));
        assert_eq!(extended(13), (13, SmallVec::from_slice(&[0])));
        assert_eq!(extended(268), (13, SmallVec::from_slice(&[255])));
        assert_eq!(extended(269), (14, SmallVec::from_slice(&[0, 0])));
        let mut e = changed(MessageType::Acknowledgement, 1, &[]);
        e.uint_option(60, 1); // Size1: delta 60
        assert_eq!(e.payload(""), [0x60, 0x44, 0, 1, 0xD1, 60 - 13, 1]);
        // Every extended form, decoded by coap-lite.
        let mut e = changed(MessageType::Acknowledgement, 1, &[]);
        let long = |n: usize| vec![b'x'; n];
        e.option(12, &long(13))
            .option(300, &long(268))
            .option(2000, &long(269))
            .option(65_000, &long(1000));
        let p = decode(&e.payload_bytes(b"end"));
        let options: Vec<(u16, usize)> = p
            .options()
            .flat_map(|(n, vs)| vs.iter().map(|v| (*n, v.len())))
            .collect();
        assert_eq!(options, [(12, 13), (300, 268), (2000, 269), (65_000, 1000)]);
        assert_eq!(p.payload, b"end");
    }
}
