//! CoAP messages (RFC 7252 §3) read in place and written straight into their datagram, for
//! coap-server and sensor-sim's client, on coap-lite's types.
//!
//! Written here rather than through coap-lite's `Packet`, which copies the token, every option
//! value and the payload into vectors of their own and the options into a map of lists: about
//! ten allocations to read a message and eight to write one, which were most of the
//! allocator's time under load (docs/benchmarks.md, "CoAP ingest"). Reading costs none here
//! (up to eight options) and writing one, the datagram. The tests check both against coap-lite,
//! field by field and byte for byte.

mod decode;
mod encode;

pub use decode::{FormatError, Message, Opt, uint};
pub use encode::{Encoder, empty};

/// Option numbers (§5.10, and RFC 7959's Size1).
pub mod option {
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
}
