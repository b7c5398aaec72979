//! Parsing a snapshot in windows of a quarter of a megabyte, side by side on several threads (by
//! default one per usable CPU) or in order on one (`--threads 1`): each window is parsed (and its
//! records prepared) on a worker thread, and the results are joined in the order of the body,
//! exactly as a sequential parse would have produced them. One thread parses each window from
//! where the previous one really ended, so the guessing below runs only with more than one.
//!
//! Where one record ends and the next begins cannot be known without parsing everything before
//! it (a `},{` may sit inside a string), so windows are cut at *guessed* record starts
//! ([`snapshot::guess_record_start`]) and each worker assumes its window begins with a record.
//! The [`Joiner`] checks every assumption against what the sequential parse would know by then:
//! the previous window must have been consumed to its last byte, ending where a record may
//! start. When it was not, the worker's result is thrown away and the window is parsed again
//! from the real state, with the unconsumed tail of the previous window in front of it. The
//! guess only affects speed, never the result.
//!
//! Memory: the windows in flight (one per thread, plus one) and their prepared lines.

use crate::snapshot::{self, BodyError, Item, MAX_RECORD_BYTES, SliceEnd, State};

/// The size a window is cut at (at the first guessed record start after it). Every window in
/// flight (one per thread, plus one) is held with its prepared lines, so this is what another
/// thread costs in memory; a quarter of a megabyte still holds hundreds of records, enough to
/// keep the per-window costs (a task, a cut, a join) out of sight.
pub(crate) const WINDOW: usize = 256 * 1024;

/// How far before the end of the buffered bytes the cut is looked for: a few records' worth.
const CUT_SEARCH: usize = 16 * 1024;

/// A piece of a body that starts, presumably, at a record.
#[derive(Debug)]
pub(crate) struct Window {
    bytes: Vec<u8>,
    /// Offset of `bytes[0]` in the body.
    base: u64,
    /// The state the parse of this window starts in: `Start` for the first, otherwise the state
    /// before a record of the body's kind (array or bare objects).
    start: State,
}

/// The kind of container the body is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unknown,
    Array,
    Objects,
}

/// Cuts a body, as it arrives, into [`Window`]s.
#[derive(Debug)]
pub(crate) struct Cutter {
    buf: Vec<u8>,
    base: u64,
    size: usize,
    kind: Kind,
    first: bool,
}

impl Cutter {
    /// Windows of at least `size` bytes, cut once that much has arrived (tests use tiny sizes
    /// to cut often).
    pub(crate) fn new(size: usize) -> Self {
        Cutter {
            buf: Vec::new(),
            base: 0,
            size: size.max(1),
            kind: Kind::Unknown,
            first: true,
        }
    }

    /// The buffer to append the body's next bytes to.
    pub(crate) fn input(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The next window, if enough of the body is there (everything left once `eof`).
    pub(crate) fn next(&mut self, eof: bool) -> Option<Window> {
        if self.buf.is_empty() {
            return None;
        }
        if self.kind == Kind::Unknown {
            self.kind = kind_of(&self.buf);
        }
        let cut = if eof {
            self.buf.len()
        } else if self.buf.len() < self.size {
            return None;
        } else {
            // Cut near the end of what is there, so that little is left to copy over.
            let from = self.buf.len().saturating_sub(CUT_SEARCH).max(1);
            match snapshot::guess_record_start(&self.buf, from) {
                Some(cut) => cut,
                // No record start in sight: a huge record, or not a snapshot at all. Hand it on
                // whole once it is large; the join sorts it out.
                None if self.buf.len() > 4 * self.size => self.buf.len(),
                None => return None,
            }
        };
        // The next window grows in a buffer of its own, sized to hold it without reallocating.
        let mut rest = Vec::with_capacity(self.size + self.size / 2);
        rest.extend_from_slice(&self.buf[cut..]);
        self.buf.truncate(cut);
        let bytes = std::mem::replace(&mut self.buf, rest);
        let start = if self.first {
            State::Start
        } else if self.kind == Kind::Objects {
            State::Objects
        } else {
            State::ArrayValue
        };
        self.first = false;
        let window = Window {
            base: self.base,
            bytes,
            start,
        };
        self.base += cut as u64;
        Some(window)
    }
}

fn kind_of(buf: &[u8]) -> Kind {
    let body = buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(buf);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Objects,
        _ => Kind::Unknown,
    }
}

/// A window after a worker parsed it.
#[derive(Debug)]
pub(crate) struct Parsed<B> {
    window: Window,
    block: B,
    end: SliceEnd,
    result: Result<(), BodyError>,
}

/// Parses one window, turning each item into part of a block with `work` (on a worker thread).
pub(crate) fn parse<B, W>(window: Window, work: &W) -> Parsed<B>
where
    B: Default,
    W: Fn(Item<'_>, &mut B),
{
    let mut block = B::default();
    let (end, result) = snapshot::scan_slice(
        &window.bytes,
        0..window.bytes.len(),
        window.start,
        window.base,
        &mut |item| work(item, &mut block),
    );
    Parsed {
        window,
        block,
        end,
        result,
    }
}

/// Joins parsed windows in body order, checking each worker's assumption (see the module docs).
#[derive(Debug)]
pub(crate) struct Joiner {
    /// Bytes of the previous window that its parse did not consume (an unfinished record).
    carry: Vec<u8>,
    carry_base: u64,
    state: State,
    /// Body bytes seen so far.
    end: u64,
    reparsed: u64,
}

impl Default for Joiner {
    fn default() -> Self {
        Self::new()
    }
}

impl Joiner {
    pub(crate) fn new() -> Self {
        Joiner {
            carry: Vec::new(),
            carry_base: 0,
            state: State::Start,
            end: 0,
            reparsed: 0,
        }
    }

    /// Windows whose worker result was discarded because a guess was wrong.
    pub(crate) fn reparsed(&self) -> u64 {
        self.reparsed
    }

    /// Takes the next window's result (windows must come in body order) and returns its block,
    /// which holds exactly what a sequential parse would have delivered for these bytes, and
    /// whether the body is still valid after them.
    pub(crate) fn accept<B, W>(&mut self, parsed: Parsed<B>, work: &W) -> (B, Result<(), BodyError>)
    where
        B: Default,
        W: Fn(Item<'_>, &mut B),
    {
        let Parsed {
            window,
            block,
            end,
            result,
        } = parsed;
        if !(self.carry.is_empty() && self.state == window.start) {
            self.reparsed += u64::from(window.start != State::Start);
            return self.parse_in_order(window, work);
        }
        self.end = window.base + window.bytes.len() as u64;
        self.advance(window.bytes, window.base, block, end, result)
    }

    /// Parses the next window (in body order) from where the body really is: the previous
    /// window's unfinished tail followed by this window. No guess is involved: this is the
    /// sequential parse, and what [`Joiner::accept`] falls back to when a guess was wrong.
    pub(crate) fn parse_in_order<B, W>(
        &mut self,
        window: Window,
        work: &W,
    ) -> (B, Result<(), BodyError>)
    where
        B: Default,
        W: Fn(Item<'_>, &mut B),
    {
        self.end = window.base + window.bytes.len() as u64;
        // Usually the previous window was consumed to its end: then this one is parsed where it
        // lies, without copying it behind an empty carry.
        let (bytes, base) = if self.carry.is_empty() {
            (window.bytes, window.base)
        } else {
            let mut bytes = std::mem::take(&mut self.carry);
            bytes.extend_from_slice(&window.bytes);
            (bytes, self.carry_base)
        };
        let mut block = B::default();
        let (end, result) =
            snapshot::scan_slice(&bytes, 0..bytes.len(), self.state, base, &mut |item| {
                work(item, &mut block)
            });
        self.advance(bytes, base, block, end, result)
    }

    /// Moves past `bytes` (starting at body offset `base`), of which the parse consumed
    /// `end.pos`; the rest is carried into the next window.
    fn advance<B>(
        &mut self,
        bytes: Vec<u8>,
        base: u64,
        block: B,
        end: SliceEnd,
        result: Result<(), BodyError>,
    ) -> (B, Result<(), BodyError>) {
        self.state = end.state;
        self.carry_base = base + end.pos as u64;
        self.carry = bytes[end.pos..].to_vec();
        let result = match result {
            Ok(()) if self.carry.len() > MAX_RECORD_BYTES => Err(BodyError::RecordTooLarge {
                offset: self.carry_base,
            }),
            other => other,
        };
        (block, result)
    }

    /// Ends the body: fails unless it held one complete snapshot.
    pub(crate) fn finish(&self) -> Result<(), BodyError> {
        snapshot::finish(self.state, &self.carry, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotParser;

    /// What a parse delivered: sensor ids (0 for malformed items) and the error, if any.
    type Outcome = (Vec<u64>, Option<String>);

    fn work(item: Item<'_>, ids: &mut Vec<u64>) {
        match item {
            Item::Record(r) => ids.push(r.sensor_id().unwrap_or(u64::MAX)),
            Item::Malformed(_) => ids.push(0),
        }
    }

    fn sequential(body: &[u8]) -> Outcome {
        let mut p = SnapshotParser::new();
        let mut ids = Vec::new();
        let r = p
            .feed(body, |item| work(item, &mut ids))
            .and_then(|()| p.finish());
        (ids, r.err().map(|e| e.to_string()))
    }

    /// Cuts `body` into windows of `size`, feeding it `chunk` bytes at a time, and joins them.
    fn windowed(body: &[u8], size: usize, chunk: usize) -> (Outcome, u64) {
        cut_and_join(body, size, chunk, false)
    }

    /// The same, with every window parsed in order (one thread) or speculatively.
    fn cut_and_join(body: &[u8], size: usize, chunk: usize, in_order: bool) -> (Outcome, u64) {
        let mut cutter = Cutter::new(size);
        let mut joiner = Joiner::new();
        let mut ids = Vec::new();
        let mut chunks = body.chunks(chunk.max(1));
        let error = loop {
            let eof = match chunks.next() {
                Some(c) => {
                    cutter.input().extend_from_slice(c);
                    false
                }
                None => true,
            };
            let mut failed = None;
            while let Some(w) = cutter.next(eof) {
                let (block, r) = if in_order {
                    joiner.parse_in_order(w, &work)
                } else {
                    joiner.accept(parse(w, &work), &work)
                };
                ids.extend(block);
                if let Err(e) = r {
                    failed = Some(e.to_string());
                    break;
                }
            }
            if failed.is_some() {
                break failed;
            }
            if eof {
                break joiner.finish().err().map(|e| e.to_string());
            }
        };
        ((ids, error), joiner.reparsed())
    }

    fn rec(id: u64, extra: &str) -> String {
        format!(
            r#"{{"id":{id},"timestamp":"2024-01-15 10:00:00","location":{{"id":1}},"sensor":{{"id":{id},"pin":"{extra}"}},"sensordatavalues":[{{"value":"1.5","value_type":"P1"}},{{"value":"2","value_type":"P2"}}]}}"#
        )
    }

    fn array(n: u64, sep: &str) -> String {
        let records: Vec<String> = (1..=n).map(|i| rec(i, "1")).collect();
        format!("[{}]\n", records.join(sep))
    }

    #[test]
    fn windows_give_exactly_the_sequential_result() {
        let bodies = [
            array(200, ","),
            array(200, ",\n"),
            format!(
                "{}\n",
                (1..=50)
                    .map(|i| rec(i, "1"))
                    .collect::<Vec<_>>()
                    .join(",\n")
            ),
            format!("\u{feff}{}", array(30, " , ")),
            "[]".to_string(),
            String::new(),
            rec(7, "1"),
        ];
        for body in &bodies {
            let want = sequential(body.as_bytes());
            for size in [1, 50, 333, 1000, 1 << 20] {
                for chunk in [1, 97, 4096] {
                    let (got, _) = windowed(body.as_bytes(), size, chunk);
                    assert_eq!(got, want, "size {size} chunk {chunk} body {:.60}", body);
                    let (got, reparsed) = cut_and_join(body.as_bytes(), size, chunk, true);
                    assert_eq!(got, want, "in order: size {size} chunk {chunk}");
                    assert_eq!(reparsed, 0, "parsing in order never guesses");
                }
            }
        }
    }

    #[test]
    fn record_look_alikes_inside_strings_change_nothing() {
        let pins = [
            r#"},{"#,
            r#"}, {\"timestamp\":1,\"sensor\":{}}"#,
            r#"]},{\"id\":"#,
        ];
        for pin in pins {
            let records: Vec<String> = (1..=100).map(|i| rec(i, pin)).collect();
            let body = format!("[{}]", records.join(","));
            let want = sequential(body.as_bytes());
            assert_eq!(want.0, (1..=100).collect::<Vec<_>>(), "{pin}");
            for size in [40, 200, 700] {
                let (got, _) = windowed(body.as_bytes(), size, 64);
                assert_eq!(got, want, "size {size} pin {pin}");
            }
        }
    }

    #[test]
    fn a_wrong_guess_costs_a_reparse_not_a_record() {
        // A nested object with the keys of a record, right after a `},`: the guess takes it
        // for a record start.
        let tricky = |i: u64| {
            format!(
                r#"{{"timestamp":"2024-01-15 10:00:00","sensor":{{"id":{i}}},"x":[{{"a":1}},{{"timestamp":"t","sensor":{{}}}}],"sensordatavalues":[]}}"#
            )
        };
        let body = format!("[{}]", (1..=60).map(tricky).collect::<Vec<_>>().join(","));
        let want = sequential(body.as_bytes());
        assert_eq!(want.0.len(), 60);
        let mut reparsed_some = false;
        for size in [10, 77, 150, 400] {
            let (got, reparsed) = windowed(body.as_bytes(), size, 1000);
            assert_eq!(got, want, "size {size}");
            reparsed_some |= reparsed > 0;
        }
        assert!(
            reparsed_some,
            "the nested look-alike should fool some guess"
        );
    }

    #[test]
    fn errors_are_reported_where_the_sequential_parse_reports_them() {
        let good = array(40, ",");
        let cases = [
            format!("{}junk", good.trim_end()),
            good[..good.len() - 300].to_string(),
            good.replacen(r#""id":20,"#, r#""id":20,,"#, 1),
            good.replacen(r#"},{"id":30"#, r#"} {"id":30"#, 1),
            "<html>".to_string(),
            format!("[{}", "x".repeat(50)),
        ];
        for body in &cases {
            let want = sequential(body.as_bytes());
            assert!(want.1.is_some(), "{body:.80}");
            for size in [1, 100, 1000, 1 << 20] {
                let (got, _) = windowed(body.as_bytes(), size, 333);
                assert_eq!(got, want, "size {size} body {body:.80}");
            }
        }
    }

    #[test]
    fn invalid_utf8_is_a_body_error_after_the_records_before_it() {
        let mut body = array(20, ",").into_bytes();
        let at = body.len() / 2;
        body[at] = 0xFF;
        let want = sequential(&body);
        assert!(
            want.1.as_deref().is_some_and(|e| e.contains("UTF-8")),
            "{want:?}"
        );
        for size in [1, 300, 1 << 20] {
            assert_eq!(windowed(&body, size, 100).0, want, "size {size}");
        }
    }

    #[test]
    fn multibyte_characters_split_across_chunks_and_windows() {
        let records: Vec<String> = (1..=30).map(|i| rec(i, "Zürich–Köln ✓")).collect();
        let body = format!("[{}]", records.join(","));
        let want = sequential(body.as_bytes());
        assert_eq!(want.1, None);
        for size in [1, 37, 500] {
            for chunk in [1, 3, 7] {
                assert_eq!(windowed(body.as_bytes(), size, chunk).0, want);
            }
        }
    }
}
