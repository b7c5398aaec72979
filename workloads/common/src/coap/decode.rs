//! A CoAP message read in place (RFC 7252 §3): header fields, and the token, options and
//! payload as slices of the datagram. No allocation for up to [`INLINE_OPTIONS`] options.
//!
//! Stricter than coap-lite's `Packet::from_bytes` where the RFC asks: a payload marker with no
//! payload after it is a format error (§3). The tests decode what coap-lite encodes and compare
//! every field.

use coap_lite::{MessageClass, MessageType};
use smallvec::SmallVec;

/// Options kept without a heap allocation: a reading has 3 Uri-Path, up to 3 Uri-Query and
/// perhaps a Content-Format.
const INLINE_OPTIONS: usize = 8;

/// Why a datagram is not a well-formed CoAP message (§4.2: a confirmable one is rejected with
/// RST, anything else is ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("shorter than the 4-byte header")]
    TooShort,
    #[error("token length {0} is over 8 (§3: 9-15 are reserved)")]
    TokenLength(u8),
    #[error("the token runs past the end of the datagram")]
    TruncatedToken,
    #[error("an option's delta or length uses the reserved value 15")]
    ReservedNibble,
    #[error("an option runs past the end of the datagram")]
    TruncatedOption,
    #[error("an option number is over 65535")]
    OptionNumber,
    #[error("a payload marker with no payload after it")]
    EmptyPayload,
}

/// One option: its number and value, in the order of the datagram (ascending numbers).
pub type Opt<'a> = (u16, &'a [u8]);

/// Where an option's value lies in the datagram. Offsets rather than slices, so that `Message`
/// stays covariant in its lifetime (a `SmallVec` of slices would not be) and can be passed where
/// a shorter one is expected.
#[derive(Clone, Copy, Debug)]
struct Span {
    number: u16,
    start: u32,
    end: u32,
}

#[derive(Debug)]
pub struct Message<'a> {
    pub kind: MessageType,
    pub class: MessageClass,
    pub message_id: u16,
    pub token: &'a [u8],
    pub payload: &'a [u8],
    datagram: &'a [u8],
    options: SmallVec<[Span; INLINE_OPTIONS]>,
}

impl<'a> Message<'a> {
    /// Reads a message; the version is not checked (a caller ignores other versions first).
    pub fn parse(datagram: &'a [u8]) -> Result<Self, FormatError> {
        let [first, code, mid_hi, mid_lo, rest @ ..] = datagram else {
            return Err(FormatError::TooShort);
        };
        let token_length = first & 0x0F;
        if token_length > 8 {
            return Err(FormatError::TokenLength(token_length));
        }
        let (token, mut rest) = rest
            .split_at_checked(usize::from(token_length))
            .ok_or(FormatError::TruncatedToken)?;
        let mut options = SmallVec::new();
        let mut number = 0u16;
        let mut payload: &[u8] = &[];
        while let [byte, after @ ..] = rest {
            if *byte == 0xFF {
                if after.is_empty() {
                    return Err(FormatError::EmptyPayload);
                }
                payload = after;
                break;
            }
            let (delta, after) = extended(byte >> 4, after)?;
            let (length, after) = extended(byte & 0x0F, after)?;
            number =
                u16::try_from(u32::from(number) + delta).map_err(|_| FormatError::OptionNumber)?;
            let start = datagram.len() - after.len();
            let (_, after) = after
                .split_at_checked(length as usize)
                .ok_or(FormatError::TruncatedOption)?;
            options.push(Span {
                number,
                start: start as u32,
                end: (start + length as usize) as u32,
            });
            rest = after;
        }
        Ok(Message {
            kind: message_type(*first),
            class: MessageClass::from(*code),
            message_id: u16::from_be_bytes([*mid_hi, *mid_lo]),
            token,
            payload,
            datagram,
            options,
        })
    }

    /// Every option, in ascending order of number.
    pub fn options(&self) -> impl Iterator<Item = Opt<'a>> + '_ {
        let datagram = self.datagram;
        self.options
            .iter()
            .map(move |o| (o.number, &datagram[o.start as usize..o.end as usize]))
    }

    /// The values of every option numbered `number`, in the order sent.
    pub fn values(&self, number: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.options()
            .filter(move |(n, _)| *n == number)
            .map(|(_, v)| v)
    }

    /// The first value of option `number`, if it is present.
    pub fn first(&self, number: u16) -> Option<&'a [u8]> {
        self.values(number).next()
    }
}

/// An option value that is a uint (§3.2: big-endian, any length up to the option's maximum);
/// `None` if it is longer than a `u32`.
pub fn uint(value: &[u8]) -> Option<u32> {
    (value.len() <= 4).then(|| value.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)))
}

fn message_type(first: u8) -> MessageType {
    match (first >> 4) & 0b11 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    }
}

/// An option delta or length from its 4-bit nibble and the extended bytes after it (§3.1).
fn extended(nibble: u8, bytes: &[u8]) -> Result<(u32, &[u8]), FormatError> {
    match (nibble, bytes) {
        (0..=12, _) => Ok((u32::from(nibble), bytes)),
        (13, [b, rest @ ..]) => Ok((u32::from(*b) + 13, rest)),
        (14, [hi, lo, rest @ ..]) => Ok((u32::from(u16::from_be_bytes([*hi, *lo])) + 269, rest)),
        (13 | 14, _) => Err(FormatError::TruncatedOption),
        _ => Err(FormatError::ReservedNibble),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::{CoapOption, Packet, RequestType};

    /// Options as numbers and owned values, to compare the two decodings.
    type Options = Vec<(u16, Vec<u8>)>;

    /// coap-lite's decoding, flattened to the same shape, for comparison.
    fn coap_lite_options(p: &Packet) -> Options {
        p.options()
            .flat_map(|(n, values)| values.iter().map(|v| (*n, v.clone())))
            .collect()
    }

    fn packet(
        kind: MessageType,
        token: &[u8],
        options: &[(u16, Vec<u8>)],
        payload: &[u8],
    ) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(kind);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = 0xBEEF;
        p.set_token(token.to_vec());
        for (n, v) in options {
            p.add_option(CoapOption::from(*n), v.clone());
        }
        p.payload = payload.to_vec();
        p
    }

    #[test]
    fn every_field_reads_as_coap_lite_encoded_it() {
        let long = |n: usize| vec![b'x'; n];
        let shapes: Vec<(Vec<u8>, Options, Vec<u8>)> = vec![
            (vec![], vec![], vec![]),
            (vec![1, 2, 3, 4, 5, 6, 7, 8], vec![], b"21.5".to_vec()),
            (
                vec![9],
                vec![
                    (11, b"sensors".to_vec()),
                    (11, b"dht".to_vec()),
                    (11, b"temperature".to_vec()),
                    (12, vec![]),
                    (15, b"place=lab".to_vec()),
                    (15, b"sensor=dht-7".to_vec()),
                ],
                b"25".to_vec(),
            ),
            // Extended deltas (13 and 14 nibbles) and lengths, and more options than inline.
            (
                vec![0xAA; 4],
                vec![
                    (1, long(12)),
                    (14, long(13)),
                    (268, long(268)),
                    (269, long(269)),
                    (2049, vec![1]),
                    (60_000, long(1)),
                    (60_000, vec![]),
                    (65_000, long(2)),
                    (65_535, long(3)),
                ],
                long(300),
            ),
        ];
        for kind in [MessageType::Confirmable, MessageType::NonConfirmable] {
            for (token, options, payload) in &shapes {
                let p = packet(kind, token, options, payload);
                let bytes = p.to_bytes_unlimited().expect("coap-lite encodes it");
                let m = Message::parse(&bytes).expect("well formed");
                let ours: Options = m.options().map(|(n, v)| (n, v.to_vec())).collect();
                assert_eq!(m.kind, p.header.get_type());
                assert_eq!(m.class, p.header.code);
                assert_eq!(m.message_id, 0xBEEF);
                assert_eq!(m.token, p.get_token());
                assert_eq!(ours, coap_lite_options(&p), "{options:?}");
                assert_eq!(m.payload, p.payload.as_slice());
            }
        }
    }

    #[test]
    fn codes_and_types_read_as_coap_lite_reads_them() {
        for first in [0x40, 0x50, 0x60, 0x70] {
            for code in [0x00, 0x01, 0x02, 0x03, 0x04, 0x44, 0xA0, 0xFF] {
                let bytes = [first, code, 0, 1];
                let m = Message::parse(&bytes).expect("a bare header is well formed");
                let p = Packet::from_bytes(&bytes).expect("coap-lite reads it too");
                assert_eq!((m.kind, m.class), (p.header.get_type(), p.header.code));
            }
        }
    }

    #[test]
    fn malformed_datagrams_are_refused_with_their_reason() {
        use FormatError::*;
        let cases: &[(&[u8], FormatError)] = &[
            (&[0x40, 0x01, 0x00], TooShort),
            (
                &[0x49, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                TokenLength(9),
            ),
            (&[0x44, 0x01, 0, 1, 1, 2], TruncatedToken),
            (&[0x40, 0x01, 0, 1, 0xF1, 0], ReservedNibble),
            (&[0x40, 0x01, 0, 1, 0x1F, 0], ReservedNibble),
            (&[0x40, 0x01, 0, 1, 0xD0], TruncatedOption),
            (&[0x40, 0x01, 0, 1, 0xE0, 0x01], TruncatedOption),
            (&[0x40, 0x01, 0, 1, 0x0D], TruncatedOption),
            (&[0x40, 0x01, 0, 1, 0x13, b'a'], TruncatedOption),
            // 65,804 (the largest 14-nibble delta) is past the last option number.
            (&[0x40, 0x01, 0, 1, 0xE0, 0xFF, 0xFF], OptionNumber),
            (&[0x40, 0x01, 0, 1, 0xB1, b'a', 0xFF], EmptyPayload),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                Message::parse(bytes).map(|_| ()),
                Err(*expected),
                "{bytes:x?}"
            );
            if *expected != EmptyPayload {
                assert!(
                    Packet::from_bytes(bytes).is_err(),
                    "coap-lite agrees: {bytes:x?}"
                );
            }
        }
    }

    #[test]
    fn uint_values_read_big_endian_and_refuse_more_than_four_bytes() {
        assert_eq!(uint(&[]), Some(0));
        assert_eq!(uint(&[0x01, 0x02]), Some(0x0102));
        assert_eq!(uint(&[0xFF; 4]), Some(u32::MAX));
        assert_eq!(uint(&[1, 2, 3, 4, 5]), None);
        let bytes = packet(MessageType::Confirmable, &[], &[(12, vec![0x28])], b"")
            .to_bytes()
            .unwrap();
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.first(12), Some(&[0x28][..]));
        assert_eq!(m.first(11), None);
    }
}
