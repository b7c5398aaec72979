//! InfluxDB 1.x line protocol, written straight into a reusable `String` buffer.
//!
//! `measurement,tag=value field=1.5,count=3i 1700000000000000000`
//!
//! Escaping follows the 1.x reference: measurement names escape commas and spaces; tag keys, tag
//! values and field keys also escape `=`. Line breaks cannot be escaped in line protocol, so they
//! are replaced by spaces (escaped). Non-finite floats are never written: InfluxDB rejects `NaN`
//! and drops the whole batch with it.

use std::fmt::Write as _;

/// Builder of one line, appended to a caller-owned buffer so batches allocate once.
///
/// Tags must come before fields. A line with no field is not valid line protocol: `finish`
/// removes it again and returns `false`.
pub struct Line<'b> {
    buf: &'b mut String,
    start: usize,
    fields: usize,
}

impl<'b> Line<'b> {
    pub fn new(buf: &'b mut String, measurement: &str) -> Self {
        let start = buf.len();
        escape_into(buf, measurement, &[',', ' ']);
        Line {
            buf,
            start,
            fields: 0,
        }
    }

    /// Adds a tag. Empty keys or values are skipped: InfluxDB rejects them.
    pub fn tag(self, key: &str, value: &str) -> Self {
        debug_assert_eq!(self.fields, 0, "tags must precede fields");
        if !key.is_empty() && !value.is_empty() {
            self.buf.push(',');
            escape_into(self.buf, key, &[',', '=', ' ']);
            self.buf.push('=');
            escape_into(self.buf, value, &[',', '=', ' ']);
        }
        self
    }

    /// Adds a float field; a non-finite value is skipped (see the module docs).
    pub fn field_f64(mut self, key: &str, value: f64) -> Self {
        if value.is_finite() {
            self.field_key(key);
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
            self.field_key(key);
            self.buf.push_str(text);
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
        self.field_key(key);
        let _ = write!(self.buf, "{value}i");
        self
    }

    /// Adds a string field, quoted.
    pub fn field_str(mut self, key: &str, value: &str) -> Self {
        self.field_key(key);
        self.buf.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                self.buf.push('\\');
            }
            self.buf.push(c);
        }
        self.buf.push('"');
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

    fn field_key(&mut self, key: &str) {
        self.buf.push(if self.fields == 0 { ' ' } else { ',' });
        escape_into(self.buf, key, &[',', '=', ' ']);
        self.buf.push('=');
        self.fields += 1;
    }
}

/// `-?[0-9]+(\.[0-9]+)?`: a float in line protocol as it stands.
fn is_plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits)
}

fn escape_into(buf: &mut String, s: &str, special: &[char]) {
    // Most names and values need no escaping; one byte scan finds out (every special
    // character is ASCII, so bytes suffice).
    if !s
        .bytes()
        .any(|b| matches!(b, b',' | b'=' | b' ' | b'\n' | b'\r' | b'\t'))
    {
        buf.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\n' | '\r' | '\t' => buf.push_str("\\ "),
            c if special.contains(&c) => {
                buf.push('\\');
                buf.push(c);
            }
            c => buf.push(c),
        }
    }
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
    fn empty_tags_are_skipped() {
        let l = line(|l| l.tag("sensor", "").field_f64("value", 1.0).finish(1));
        assert_eq!(l, "temperature value=1 1\n");
    }
}
