//! Incremental parsing of a snapshot body into records, as its bytes arrive.
//!
//! A whole-world `data.24h.json` is tens of megabytes and a synthetic benchmark snapshot hundreds;
//! holding either in memory (let alone as a `serde_json::Value` tree) would dwarf everything else
//! the ingestor does. Instead the parser keeps only the bytes of the record being received: each
//! complete record is deserialised in place, borrowing its strings from the buffer, handed to the
//! caller and forgotten. Memory is one chunk plus one record, whatever the snapshot's size.
//!
//! Accepted shapes: a JSON array of records (the API), a single record object (some endpoints
//! and `luftdatenpumpe`'s samples), and records separated by commas and/or whitespace without
//! brackets (a slice of the v1 feed as `base-camp-luftdaten` stored it, or NDJSON).
//!
//! A record that is valid JSON but not a record (a string, a `sensor` that is a number...) is
//! reported as [`Item::Malformed`] and skipped; the rest of the snapshot still counts. Invalid
//! JSON ends the body with a [`BodyError`], after the records before it were delivered.

use crate::record::Record;

mod scan;

pub(crate) use scan::{SliceEnd, State, finish, guess_record_start, scan_slice};

/// A record larger than this cannot be real (they are under 2 KiB) and is not buffered further.
pub(crate) const MAX_RECORD_BYTES: usize = 1 << 20;

/// What the parser hands to its caller.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // records are the rule; boxing would allocate for each
pub(crate) enum Item<'a> {
    Record(Record<'a>),
    /// Valid JSON in a record position that is not a record.
    Malformed(serde_json::Error),
}

/// Why a body is not a snapshot; `offset` is in bytes from the start of the body.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the fields are what the messages show
pub enum BodyError {
    /// Nothing at all.
    #[error("the body is empty")]
    Empty,
    /// Neither an array nor an object.
    #[error("the body is not a JSON array or object (starts with {found:?})")]
    NotJson { found: String },
    /// Not text.
    #[error("the body is not UTF-8 (invalid byte at {offset})")]
    Utf8 { offset: u64 },
    /// A record that is not JSON.
    #[error("invalid JSON in the record at byte {offset}: {source}")]
    Syntax {
        offset: u64,
        #[source]
        source: serde_json::Error,
    },
    /// Records not separated as an array's are.
    #[error("expected ',' or ']' after the record ending at byte {offset}, found {found:?}")]
    Separator { offset: u64, found: char },
    /// More after the snapshot ended.
    #[error("unexpected data after the end of the snapshot at byte {offset} ({found:?})")]
    TrailingData { offset: u64, found: String },
    /// The snapshot broke off.
    #[error("the body ends inside the snapshot (truncated after {offset} bytes)")]
    Truncated { offset: u64 },
    /// A record larger than `MAX_RECORD_BYTES`: too large to be real.
    #[error("a record at byte {offset} is larger than {MAX_RECORD_BYTES} bytes")]
    RecordTooLarge { offset: u64 },
}

/// The scanner driven one chunk at a time, on one thread: the tests' way in. The ingestor scans
/// windows of the body in parallel instead (`windows`), with the same scanner.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct SnapshotParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// Bytes drained from the front of `buf` so far, for error offsets.
    base: u64,
    state: State,
}

#[cfg(test)]
impl Default for SnapshotParser {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl SnapshotParser {
    pub(crate) fn new() -> Self {
        SnapshotParser {
            buf: Vec::new(),
            pos: 0,
            base: 0,
            state: State::Start,
        }
    }

    /// Appends `chunk` and delivers every record it completes.
    pub(crate) fn feed(
        &mut self,
        chunk: &[u8],
        on_item: impl FnMut(Item<'_>),
    ) -> Result<(), BodyError> {
        self.input().extend_from_slice(chunk);
        self.parse_input(on_item)
    }

    /// The input buffer, for a reader to append the next bytes to directly (saving the copy
    /// `feed` makes); call [`SnapshotParser::parse_input`] after appending.
    pub(crate) fn input(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            // Only the unfinished record (if any) is left to keep.
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        &mut self.buf
    }

    /// Delivers every record the input buffer completes, one by one, on this thread.
    pub(crate) fn parse_input(
        &mut self,
        mut on_item: impl FnMut(Item<'_>),
    ) -> Result<(), BodyError> {
        let (end, result) = scan_slice(
            &self.buf,
            self.pos..self.buf.len(),
            self.state,
            self.base,
            &mut on_item,
        );
        self.advance(end);
        result?;
        self.check_incomplete()
    }

    /// Ends the body: fails unless it held one complete snapshot.
    pub(crate) fn finish(&self) -> Result<(), BodyError> {
        finish(
            self.state,
            &self.buf[self.pos..],
            self.base + self.buf.len() as u64,
        )
    }

    fn advance(&mut self, to: SliceEnd) {
        self.pos = to.pos;
        self.state = to.state;
    }

    fn check_incomplete(&self) -> Result<(), BodyError> {
        if self.buf.len() - self.pos > MAX_RECORD_BYTES {
            return Err(BodyError::RecordTooLarge {
                offset: self.base + self.pos as u64,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in chunks of `chunk` bytes; returns sensor ids, malformed count, result.
    fn run(body: &[u8], chunk: usize) -> (Vec<u64>, usize, Result<(), BodyError>) {
        let mut p = SnapshotParser::new();
        let mut ids = Vec::new();
        let mut malformed = 0;
        let mut result = Ok(());
        for c in body.chunks(chunk.max(1)) {
            result = p.feed(c, |item| match item {
                Item::Record(r) => ids.push(r.sensor_id().unwrap_or(0)),
                Item::Malformed(_) => malformed += 1,
            });
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = p.finish();
        }
        (ids, malformed, result)
    }

    fn rec(id: u64) -> String {
        format!(
            r#"{{"timestamp":"2024-01-15 10:00:0{}","sensor":{{"id":{id}}},"sensordatavalues":[{{"value":"1.5","value_type":"P1"}}]}}"#,
            id % 10
        )
    }

    #[test]
    fn an_array_in_any_chunking_gives_the_same_records() {
        let body = format!("[{},\n{} , {}]\n", rec(1), rec(2), rec(3));
        for chunk in [1, 2, 3, 7, 64, 10_000] {
            let (ids, malformed, r) = run(body.as_bytes(), chunk);
            assert!(r.is_ok(), "chunk {chunk}: {r:?}");
            assert_eq!((ids, malformed), (vec![1, 2, 3], 0), "chunk {chunk}");
        }
    }

    #[test]
    fn a_single_object_is_a_snapshot_of_one() {
        let (ids, _, r) = run(rec(5).as_bytes(), 4);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(ids, [5]);
    }

    #[test]
    fn bare_records_separated_by_commas_or_newlines() {
        let body = format!("{},\n{},\n{}\n", rec(1), rec(2), rec(3));
        assert_eq!(run(body.as_bytes(), 5).0, [1, 2, 3]);
        let ndjson = format!("{}\n{}\n", rec(1), rec(2));
        assert_eq!(run(ndjson.as_bytes(), 5).0, [1, 2]);
    }

    #[test]
    fn an_empty_array_is_valid_and_empty() {
        let (ids, _, r) = run(b" [ ] ", 1);
        assert!(r.is_ok());
        assert!(ids.is_empty());
    }

    #[test]
    fn wrong_shapes_are_skipped_and_the_rest_is_kept() {
        let body = format!(
            r#"[{}, "text", 42, {{"sensor": 7}}, null, {}]"#,
            rec(1),
            rec(2)
        );
        let (ids, malformed, r) = run(body.as_bytes(), 3);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(ids, [1, 2]);
        assert_eq!(malformed, 4);
    }

    #[test]
    fn trailing_junk_is_an_error_after_every_record_was_delivered() {
        let body = format!("[{},{}]<html>oops</html>", rec(1), rec(2));
        let (ids, _, r) = run(body.as_bytes(), 16);
        assert_eq!(ids, [1, 2]);
        assert!(matches!(r, Err(BodyError::TrailingData { .. })), "{r:?}");
    }

    #[test]
    fn truncation_is_an_error_and_the_partial_record_is_not_delivered() {
        let body = format!("[{},{}", rec(1), rec(2));
        let cut = &body.as_bytes()[..body.len() - 10];
        let (ids, _, r) = run(cut, 8);
        assert_eq!(ids, [1]);
        assert!(matches!(r, Err(BodyError::Truncated { .. })), "{r:?}");
        let (_, _, r) = run(format!("[{}", rec(1)).as_bytes(), 8);
        assert!(matches!(r, Err(BodyError::Truncated { .. })), "{r:?}");
    }

    #[test]
    fn invalid_json_stops_the_body() {
        let body = format!(r#"[{},{{"sensor":}},{}]"#, rec(1), rec(2));
        let (ids, _, r) = run(body.as_bytes(), 1000);
        assert_eq!(ids, [1]);
        assert!(matches!(r, Err(BodyError::Syntax { .. })), "{r:?}");
        let (_, _, r) = run(format!("[{} {}]", rec(1), rec(2)).as_bytes(), 1000);
        assert!(matches!(r, Err(BodyError::Separator { .. })), "{r:?}");
    }

    #[test]
    fn non_json_bodies_are_recognised() {
        let (_, _, r) = run(b"<!DOCTYPE html><p>502 Bad Gateway</p>", 1000);
        assert!(matches!(r, Err(BodyError::NotJson { .. })), "{r:?}");
        let (_, _, r) = run(b"", 1000);
        assert!(matches!(r, Err(BodyError::Empty)), "{r:?}");
        let (_, _, r) = run(b"   \n", 1000);
        assert!(matches!(r, Err(BodyError::Empty)), "{r:?}");
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let body = format!("\u{feff}[{}]", rec(4));
        let (ids, _, r) = run(body.as_bytes(), 1);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(ids, [4]);
    }

    #[test]
    fn a_huge_record_is_refused_instead_of_buffered() {
        let mut body = String::from(r#"[{"junk":""#);
        body.push_str(&"x".repeat(MAX_RECORD_BYTES + 10));
        let (_, _, r) = run(body.as_bytes(), 64 * 1024);
        assert!(matches!(r, Err(BodyError::RecordTooLarge { .. })), "{r:?}");
    }

    #[test]
    fn memory_stays_at_one_record_plus_one_chunk() {
        let one = rec(1);
        let mut p = SnapshotParser::new();
        let mut items = 0;
        p.feed(b"[", |_| {}).expect("start");
        for _ in 0..1000 {
            p.feed(one.as_bytes(), |_| items += 1).expect("record");
            p.feed(b",", |_| {}).expect("comma");
        }
        assert_eq!(items, 1000);
        assert!(
            p.buf.capacity() < 4 * one.len() + 64,
            "{}",
            p.buf.capacity()
        );
    }
}
