//! The grammar of a snapshot around its records, over one slice of buffered input: where the
//! records start and end, the separators between them, and whether the body was complete.

use serde::de::IgnoredAny;
use serde_json::error::Category;

use super::{BodyError, Item};
use crate::record::Record;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Nothing but whitespace seen yet.
    Start,
    /// Inside `[`, before a record or `]`.
    ArrayValue,
    /// Inside `[`, after a record: `,` or `]` must follow.
    ArraySeparator,
    /// Bare records (one object, or several separated by commas or whitespace).
    Objects,
    /// After the closing `]`: only whitespace may follow.
    Done,
}

/// A parse over one slice of buffered input: the grammar of the snapshot around the records.
/// The slice has been checked to be UTF-8 once, so serde_json need not check every string again.
struct Scan<'a> {
    text: &'a str,
    pos: usize,
    state: State,
    /// Offset of `text` in the body, for error messages.
    base: u64,
}

impl<'a> Scan<'a> {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn skip_whitespace(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while let Some(&b) = bytes.get(self.pos) {
            if !b.is_ascii_whitespace() {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    /// Steps over what precedes the first record (whitespace, a byte order mark, `[`).
    fn enter(&mut self) -> Result<(), BodyError> {
        while self.state == State::Start {
            let Some(b) = self.skip_whitespace() else {
                return Ok(());
            };
            if b == 0xEF {
                match self.text[self.pos..].chars().next() {
                    Some('\u{feff}') => {
                        self.pos += '\u{feff}'.len_utf8();
                        continue;
                    }
                    _ => return Err(self.not_json()),
                }
            }
            match b {
                b'[' => {
                    self.pos += 1;
                    self.state = State::ArrayValue;
                }
                b'{' => self.state = State::Objects,
                _ => return Err(self.not_json()),
            }
        }
        Ok(())
    }

    /// Delivers records until the text runs out (possibly inside a record, which then stays
    /// unconsumed).
    fn run(&mut self, on_item: &mut impl FnMut(Item<'a>)) -> Result<(), BodyError> {
        loop {
            let Some(b) = self.skip_whitespace() else {
                return Ok(());
            };
            match self.state {
                // Leaves `Start`, or runs out of text and ends the loop above.
                State::Start => self.enter()?,
                State::ArrayValue => {
                    if b == b']' {
                        self.pos += 1;
                        self.state = State::Done;
                    } else if self.record(on_item)? {
                        self.state = State::ArraySeparator;
                    } else {
                        return Ok(());
                    }
                }
                State::ArraySeparator => match b {
                    b',' => {
                        self.pos += 1;
                        self.state = State::ArrayValue;
                    }
                    b']' => {
                        self.pos += 1;
                        self.state = State::Done;
                    }
                    _ => {
                        return Err(BodyError::Separator {
                            offset: self.offset(),
                            found: char::from(b),
                        });
                    }
                },
                State::Objects => {
                    if b == b',' {
                        self.pos += 1;
                    } else if b == b'{' {
                        if !self.record(on_item)? {
                            return Ok(());
                        }
                    } else {
                        return Err(self.trailing());
                    }
                }
                State::Done => return Err(self.trailing()),
            }
        }
    }

    /// Parses the value at `pos`. `Ok(false)`: it is not complete yet.
    fn record(&mut self, on_item: &mut impl FnMut(Item<'a>)) -> Result<bool, BodyError> {
        let start = self.pos;
        let input: &'a str = &self.text[start..];
        let mut stream = serde_json::Deserializer::from_str(input).into_iter::<Record<'a>>();
        let error = match stream.next() {
            Some(Ok(record)) => {
                self.pos = start + stream.byte_offset();
                on_item(Item::Record(record));
                return Ok(true);
            }
            Some(Err(e)) => e,
            None => return Ok(false),
        };
        match error.classify() {
            Category::Eof => Ok(false),
            Category::Data => {
                // Valid JSON of the wrong shape: step over it as a whole.
                let mut skip = serde_json::Deserializer::from_str(input).into_iter::<IgnoredAny>();
                match skip.next() {
                    // A number at the very end of the buffer may continue in the next chunk.
                    Some(Ok(_))
                        if skip.byte_offset() == input.len()
                            && !matches!(input.as_bytes().first(), Some(b'{' | b'[' | b'"')) =>
                    {
                        Ok(false)
                    }
                    Some(Ok(_)) => {
                        self.pos = start + skip.byte_offset();
                        on_item(Item::Malformed(error));
                        Ok(true)
                    }
                    Some(Err(e)) if e.is_eof() => Ok(false),
                    Some(Err(e)) => Err(BodyError::Syntax {
                        offset: self.offset(),
                        source: e,
                    }),
                    None => Ok(false),
                }
            }
            Category::Syntax | Category::Io => Err(BodyError::Syntax {
                offset: self.offset(),
                source: error,
            }),
        }
    }

    fn excerpt(&self) -> String {
        self.text[self.pos..].chars().take(40).collect()
    }

    fn not_json(&self) -> BodyError {
        BodyError::NotJson {
            found: self.excerpt(),
        }
    }

    fn trailing(&self) -> BodyError {
        BodyError::TrailingData {
            offset: self.offset(),
            found: self.excerpt(),
        }
    }
}

/// Where the parse of a slice ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SliceEnd {
    /// Position in the buffer after the last byte consumed.
    pub(crate) pos: usize,
    pub(crate) state: State,
}

/// Parses `input[range]` from `state`. The slice is checked to be UTF-8 in one go (a slice
/// that ends inside a character is parsed up to it; the rest comes with the next bytes).
pub(crate) fn scan_slice<'a>(
    input: &'a [u8],
    range: std::ops::Range<usize>,
    state: State,
    base: u64,
    on_item: &mut impl FnMut(Item<'a>),
) -> (SliceEnd, Result<(), BodyError>) {
    let from = range.start;
    let bytes = &input[range];
    let (text, invalid_at) = match std::str::from_utf8(bytes) {
        Ok(text) => (text, None),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // Valid by the error's own account, so this never falls back to "".
            let text = std::str::from_utf8(valid).unwrap_or_default();
            (text, e.error_len().map(|_| e.valid_up_to()))
        }
    };
    let mut scan = Scan {
        text,
        pos: 0,
        state,
        base: base + from as u64,
    };
    let mut result = scan.run(on_item);
    if let (Ok(()), Some(at)) = (&result, invalid_at) {
        result = Err(BodyError::Utf8 {
            offset: base + (from + at) as u64,
        });
    }
    let end = SliceEnd {
        pos: from + scan.pos,
        state: scan.state,
    };
    (end, result)
}

/// The start of a record at or after `from`, guessed without parsing what precedes it: an
/// object after a `}` and any commas and whitespace, which has a `timestamp` and a `sensor`
/// (the values inside a record are objects after `},` too, but have neither). A `},{` inside a
/// string can still fool it, which is why every guess is checked (see
/// [`crate::windows`]).
pub(crate) fn guess_record_start(input: &[u8], from: usize) -> Option<usize> {
    /// How far past `from` to look before giving up.
    const SEARCH: usize = 256 * 1024;

    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        timestamp: Option<IgnoredAny>,
        #[serde(default)]
        sensor: Option<IgnoredAny>,
    }

    let end = input.len().min(from.saturating_add(SEARCH));
    let mut i = from;
    while i < end {
        let close = i + input[i..end].iter().position(|&b| b == b'}')?;
        let next = close
            + 1
            + input[close + 1..end]
                .iter()
                .position(|&b| !(b.is_ascii_whitespace() || b == b','))?;
        if input[next] == b'{' {
            let mut probe =
                serde_json::Deserializer::from_slice(&input[next..]).into_iter::<Probe>();
            if let Some(Ok(Probe {
                timestamp: Some(_),
                sensor: Some(_),
            })) = probe.next()
            {
                return Some(next);
            }
        }
        i = next;
    }
    None
}

/// Whether a body that ended in `state`, with `rest` unconsumed, was one complete snapshot.
/// `end`: the body's length, for the error.
pub(crate) fn finish(state: State, rest: &[u8], end: u64) -> Result<(), BodyError> {
    let trailing_ws = rest.iter().all(u8::is_ascii_whitespace);
    match state {
        State::Done | State::Objects if trailing_ws => Ok(()),
        State::Start if trailing_ws => Err(BodyError::Empty),
        State::Start => Err(BodyError::NotJson {
            found: String::from_utf8_lossy(&rest[..rest.len().min(40)]).into_owned(),
        }),
        _ => Err(BodyError::Truncated { offset: end }),
    }
}
