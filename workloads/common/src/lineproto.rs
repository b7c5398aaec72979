//! InfluxDB 1.x line protocol, written straight into a reusable `String` buffer.
//!
//! `measurement,tag=value field=1.5,count=3i,note="text" 1700000000000000000`
//!
//! Every string gives a line InfluxDB 1.x parses, whatever it holds. What the protocol cannot
//! carry is changed, and the line reads back as changed (tested against a real InfluxDB):
//! - measurements escape `,` and space; tag keys, tag values and field keys also escape `=`;
//! - control characters (line breaks, tab, NUL, ...) cannot be escaped: they become spaces;
//! - backslashes are taken literally, but a run of them at the end would escape the separator
//!   that follows (the tag value `trailing\` broke the whole line: "invalid tag format"), so it
//!   is removed; in measurements and field keys InfluxDB also reads a backslash before a space,
//!   comma, `=` or `"` as an escape, so such a run is removed there too;
//! - a measurement that starts with `#` (a comment line) starts with `_` instead;
//! - a tag key or field key `time` (which InfluxDB refuses: it is the timestamp's column) is
//!   written as `time_`;
//! - string field values escape `"` and `\` and carry everything else unchanged;
//! - empty tags are skipped and an empty field key drops the field (InfluxDB rejects both), and
//!   a line without a measurement or a field is not written.
//!
//! Non-finite floats are never written: InfluxDB rejects `NaN` and drops the whole batch with it.

use std::fmt::Write as _;

/// Builder of one line, appended to a caller-owned buffer so batches allocate once.
///
/// Tags must come before fields. A line with no field is not valid line protocol: `finish`
/// removes it again and returns `false`.
pub struct Line<'b> {
    buf: &'b mut String,
    start: usize,
    /// False when the measurement sanitized to nothing: no field can make such a line valid.
    measurement: bool,
    fields: usize,
}

impl<'b> Line<'b> {
    /// Starts a line. A measurement that sanitizes to nothing makes a line that `finish` drops.
    pub fn new(buf: &'b mut String, measurement: &str) -> Self {
        let start = buf.len();
        let measurement = escape_into(buf, measurement, Part::Measurement);
        if buf[start..].starts_with('#') {
            buf.replace_range(start..start + 1, "_");
        }
        Line {
            buf,
            start,
            measurement,
            fields: 0,
        }
    }

    /// Adds a tag. One whose key or value sanitizes to nothing is skipped: InfluxDB rejects
    /// empty ones.
    pub fn tag(self, key: &str, value: &str) -> Self {
        debug_assert_eq!(self.fields, 0, "tags must precede fields");
        let mark = self.buf.len();
        self.buf.push(',');
        let written = escape_into(self.buf, key_name(key), Part::Tag) && {
            self.buf.push('=');
            escape_into(self.buf, value, Part::Tag)
        };
        if !written {
            self.buf.truncate(mark);
        }
        self
    }

    /// Adds a float field; a non-finite value is skipped (see the module docs).
    pub fn field_f64(mut self, key: &str, value: f64) -> Self {
        if value.is_finite() && self.field_key(key) {
            // `Display` for f64 is exact and round-trips ("25.5", "0.1", "1e-7" never appears).
            let _ = write!(self.buf, "{value}");
        }
        self
    }

    /// Adds a float field from decimal text the caller already holds, e.g. a reading that
    /// arrived as the string `"20.40"`. A plain decimal (`-?digits[.digits]`) is copied as it
    /// is: exact, and it saves formatting the number again on hot paths. Any other text is
    /// parsed and written as [`Line::field_f64`] would, so non-numeric or non-finite text is
    /// skipped.
    pub fn field_decimal(mut self, key: &str, text: &str) -> Self {
        if is_plain_decimal(text) {
            if self.field_key(key) {
                self.buf.push_str(text);
            }
            self
        } else {
            match text.trim().parse::<f64>() {
                Ok(value) => self.field_f64(key, value),
                Err(_) => self,
            }
        }
    }

    /// Adds an integer field (`42i`).
    pub fn field_i64(mut self, key: &str, value: i64) -> Self {
        if self.field_key(key) {
            let _ = write!(self.buf, "{value}i");
        }
        self
    }

    /// Adds a string field, quoted; the value is stored exactly as given.
    pub fn field_str(mut self, key: &str, value: &str) -> Self {
        if self.field_key(key) {
            self.buf.push('"');
            if value.bytes().any(|b| b == b'"' || b == b'\\') {
                for c in value.chars() {
                    if c == '"' || c == '\\' {
                        self.buf.push('\\');
                    }
                    self.buf.push(c);
                }
            } else {
                // The usual case, a constant such as `upstream`: one copy, not one push a char.
                self.buf.push_str(value);
            }
            self.buf.push('"');
        }
        self
    }

    /// Ends the line with a nanosecond timestamp. Returns `false` (and writes nothing) when the
    /// line has no field.
    pub fn finish(self, timestamp_ns: i64) -> bool {
        if self.fields == 0 {
            self.buf.truncate(self.start);
            return false;
        }
        let _ = writeln!(self.buf, " {timestamp_ns}");
        true
    }

    /// Writes the separator and `key=`, unless the key sanitizes to nothing or the line has no
    /// measurement; the caller writes the value only when this returns true.
    fn field_key(&mut self, key: &str) -> bool {
        if !self.measurement {
            return false;
        }
        let mark = self.buf.len();
        self.buf.push(if self.fields == 0 { ' ' } else { ',' });
        if !escape_into(self.buf, key_name(key), Part::FieldKey) {
            self.buf.truncate(mark);
            return false;
        }
        self.buf.push('=');
        self.fields += 1;
        true
    }
}

/// Where a string goes in a line: each part has its own escapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Measurement,
    /// Tag keys and tag values.
    Tag,
    FieldKey,
}

impl Part {
    /// Characters written with a backslash before them.
    fn escapes(self, c: char) -> bool {
        matches!(c, ',' | ' ') || (c == '=' && self != Part::Measurement)
    }

    /// Whether a run of backslashes right before `c` must go (see the module docs).
    fn drops_backslashes_before(self, c: char) -> bool {
        self != Part::Tag && (c.is_ascii_control() || matches!(c, ',' | ' ' | '=' | '"'))
    }
}

/// `time_` for `time`, which InfluxDB refuses as a tag or field key.
fn key_name(key: &str) -> &str {
    if key.trim_end_matches('\\') == "time" {
        "time_"
    } else {
        key
    }
}

/// `-?[0-9]+(\.[0-9]+)?`: a float in line protocol as it stands.
fn is_plain_decimal(text: &str) -> bool {
    // One pass over the bytes: this runs for every value of every record.
    let digits = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let mut run = 0usize; // digits since the start or the point
    let mut point = false;
    for &b in digits {
        if b.is_ascii_digit() {
            run += 1;
        } else if b == b'.' && !point && run > 0 {
            point = true;
            run = 0;
        } else {
            return false;
        }
    }
    run > 0
}

/// Bytes that make a string need more than a plain copy in some part of a line: the escaped
/// ones, backslashes, quotes and control characters (see the module docs).
const NEEDS_CARE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = matches!(b, b',' | b'=' | b' ' | b'"' | b'\\') || b.is_ascii_control();
        i += 1;
    }
    table
};

/// Appends `s`, sanitized and escaped for `part` (see the module docs); false when nothing of it
/// is left.
fn escape_into(buf: &mut String, s: &str, part: Part) -> bool {
    // Most names and values need neither escaping nor sanitizing; one byte scan finds out
    // (every character concerned is ASCII, so bytes suffice).
    let plain = !s.bytes().any(|b| NEEDS_CARE[usize::from(b)]);
    if plain {
        buf.push_str(s);
        return !s.is_empty();
    }
    let start = buf.len();
    // Backslashes are held back until the next character shows whether they may stay; those
    // still held at the end are trailing, and go.
    let mut backslashes = 0;
    for c in s.chars() {
        if c == '\\' {
            backslashes += 1;
            continue;
        }
        if !part.drops_backslashes_before(c) {
            buf.extend(std::iter::repeat_n('\\', backslashes));
        }
        backslashes = 0;
        if c.is_ascii_control() {
            buf.push_str("\\ ");
        } else {
            if part.escapes(c) {
                buf.push('\\');
            }
            buf.push(c);
        }
    }
    buf.len() > start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: impl FnOnce(Line<'_>) -> bool) -> String {
        let mut buf = String::new();
        assert!(f(Line::new(&mut buf, "temperature")));
        buf
    }

    #[test]
    fn writes_tags_fields_and_timestamp() {
        let l = line(|l| l.tag("place", "room1").field_f64("value", 25.5).finish(7));
        assert_eq!(l, "temperature,place=room1 value=25.5 7\n");
    }

    #[test]
    fn escapes_special_characters_where_the_protocol_requires() {
        let mut buf = String::new();
        Line::new(&mut buf, "air quality,x")
            .tag("loc id", "a=b,c d")
            .field_str("note", r#"say "hi" \o/"#)
            .field_i64("aqi", 3)
            .finish(1);
        assert_eq!(
            buf,
            "air\\ quality\\,x,loc\\ id=a\\=b\\,c\\ d note=\"say \\\"hi\\\" \\\\o/\",aqi=3i 1\n"
        );
    }

    #[test]
    fn line_breaks_never_split_a_line() {
        let l = line(|l| l.tag("place", "a\nb").field_f64("value", 1.0).finish(1));
        assert_eq!(l.lines().count(), 1);
    }

    #[test]
    fn non_finite_floats_are_skipped_and_an_empty_line_is_removed() {
        let mut buf = String::from("keep\n");
        let written = Line::new(&mut buf, "m")
            .tag("t", "v")
            .field_f64("a", f64::NAN)
            .field_f64("b", f64::INFINITY)
            .finish(1);
        assert!(!written);
        assert_eq!(buf, "keep\n");
    }

    #[test]
    fn decimal_text_is_copied_when_plain_and_parsed_otherwise() {
        let mut buf = String::new();
        Line::new(&mut buf, "m")
            .field_decimal("a", "20.40")
            .field_decimal("b", "-3")
            .field_decimal("c", " 7.5 ")
            .field_decimal("d", "1e3")
            .field_decimal("e", "nan")
            .field_decimal("f", "12,5")
            .field_decimal("g", "1.")
            .field_decimal("h", "-.5")
            .finish(1);
        assert_eq!(buf, "m a=20.40,b=-3,c=7.5,d=1000,g=1,h=-0.5 1\n");
    }

    #[test]
    fn plain_decimals_are_digits_with_at_most_one_inner_point() {
        for plain in ["0", "20.40", "-3", "-0.5", "1999.90", "007"] {
            assert!(is_plain_decimal(plain), "{plain}");
        }
        for other in [
            "", "-", ".", "1.", ".5", "-.5", "1.2.3", "--1", "1e3", " 1", "1,5", "+1",
        ] {
            assert!(!is_plain_decimal(other), "{other}");
        }
    }

    #[test]
    fn trailing_backslashes_are_removed_where_they_would_escape_a_separator() {
        let mut buf = String::new();
        Line::new(&mut buf, "m\\")
            .tag("type\\", "trailing\\")
            .tag("country", "\\\\")
            .tag("path", "a\\b")
            .field_f64("v\\", 1.0)
            .field_str("note", "ends in \\")
            .finish(1);
        assert_eq!(
            buf,
            "m,type=trailing,path=a\\b v=1,note=\"ends in \\\\\" 1\n"
        );
    }

    #[test]
    fn control_characters_become_escaped_spaces_outside_string_fields() {
        let mut buf = String::new();
        Line::new(&mut buf, "m\t1")
            .tag("k\0", "a\r\nb")
            .field_str("s", "x\ny")
            .finish(1);
        assert_eq!(buf, "m\\ 1,k\\ =a\\ \\ b s=\"x\ny\" 1\n");
    }

    #[test]
    fn keys_named_time_are_renamed() {
        assert_eq!(
            line_of("m", |l| l.tag("time", "t").field_i64("time", 1)),
            Some("m,time_=t time_=1i 1\n".into())
        );
    }

    #[test]
    fn a_measurement_never_starts_a_comment_line() {
        assert_eq!(
            line_of("#m", |l| l.field_i64("v", 1)),
            Some("_m v=1i 1\n".into())
        );
    }

    #[test]
    fn nothing_left_of_a_key_or_measurement_drops_the_field_or_line() {
        assert_eq!(
            line_of("m", |l| l.field_i64("\\", 1).field_i64("v", 2)),
            Some("m v=2i 1\n".into())
        );
        assert_eq!(line_of("m", |l| l.field_f64("", 1.0)), None);
        assert_eq!(line_of("\\", |l| l.tag("k", "v").field_f64("v", 1.0)), None);
        assert_eq!(line_of("", |l| l.field_str("v", "x")), None);
    }

    fn line_of(measurement: &str, f: impl FnOnce(Line<'_>) -> Line<'_>) -> Option<String> {
        let mut buf = String::new();
        f(Line::new(&mut buf, measurement)).finish(1).then_some(buf)
    }

    #[test]
    fn empty_tags_are_skipped() {
        let l = line(|l| l.tag("sensor", "").field_f64("value", 1.0).finish(1));
        assert_eq!(l, "temperature value=1 1\n");
    }
}
