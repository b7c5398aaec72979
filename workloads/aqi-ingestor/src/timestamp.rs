//! Sensor.Community timestamps: `"YYYY-MM-DD HH:MM:SS"`, UTC, no zone marker.
//!
//! Parsed by hand because this runs once per record on the hot path (over a million times a
//! second in the benchmark) and the format is fixed; the tests check it against `jiff`.

/// Seconds since the Unix epoch (UTC). `u32` covers 1970 to 2106 and keeps the per-sensor
/// watermark small; 0 never occurs (see [`parse`]), so the watermark can use it for "none".
pub type EpochSeconds = u32;

/// Earliest accepted year. Sensor.Community started in 2015; a reading from before 2000 is a
/// clock error, not data.
pub(crate) const MIN_YEAR: u32 = 2000;
/// Latest accepted year (the last whole year `EpochSeconds` can hold).
pub(crate) const MAX_YEAR: u32 = 2105;

/// Parses `YYYY-MM-DD HH:MM:SS` (also accepting `T` as the separator and a trailing `Z`, which
/// mean the same). Returns `None` for anything else, including impossible dates such as
/// February 30th and years outside `MIN_YEAR..=MAX_YEAR`.
pub fn parse(s: &str) -> Option<EpochSeconds> {
    let b = s.as_bytes();
    let b = match b {
        [head @ .., b'Z'] => head,
        _ => b,
    };
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    EpochSeconds::try_from(secs).ok()
}

/// Nanoseconds since the epoch, as InfluxDB line protocol wants them.
pub fn to_nanos(t: EpochSeconds) -> i64 {
    i64::from(t) * 1_000_000_000
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_feed_format_as_utc() {
        assert_eq!(parse("2000-01-01 00:00:00"), Some(946_684_800));
        assert_eq!(parse("2019-04-16 14:22:52"), Some(1_555_424_572));
        assert_eq!(parse("2024-02-29 23:59:59"), Some(1_709_251_199));
        assert_eq!(parse("2019-04-16T14:22:52Z"), Some(1_555_424_572));
    }

    #[test]
    fn rejects_malformed_and_impossible_timestamps() {
        for s in [
            "",
            "2019-04-16",
            "2019-04-16 14:22",
            "2019-04-16 14:22:52.5",
            "2019-04-16 14:22:52+02:00",
            "2019/04/16 14:22:52",
            "2019-4-16 14:22:52 ",
            "2019-13-01 00:00:00",
            "2019-00-01 00:00:00",
            "2019-02-29 00:00:00",
            "2019-04-31 00:00:00",
            "2019-04-00 00:00:00",
            "2019-04-16 24:00:00",
            "2019-04-16 14:60:00",
            "2019-04-16 14:22:60",
            "1970-01-01 00:00:00",
            "1999-12-31 23:59:59",
            "2106-01-01 00:00:00",
            "２０19-04-16 14:22:52",
            "abcd-ef-gh ij:kl:mn",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn agrees_with_jiff_across_the_calendar() {
        // Every day from 2000 to 2105 at a time that moves through the day.
        let mut day = jiff::civil::date(2000, 1, 1);
        let end = jiff::civil::date(2105, 12, 31);
        let mut n = 0u32;
        while day <= end {
            let (h, m, s) = ((n % 24) as i8, (n * 7 % 60) as i8, (n * 13 % 60) as i8);
            let dt = day.at(h, m, s, 0);
            let text = dt.strftime("%Y-%m-%d %H:%M:%S").to_string();
            let want = dt
                .to_zoned(jiff::tz::TimeZone::UTC)
                .expect("in range")
                .timestamp()
                .as_second();
            assert_eq!(parse(&text).map(i64::from), Some(want), "{text}");
            day = day.tomorrow().expect("in range");
            n += 1;
        }
    }

    #[test]
    fn nanoseconds_for_line_protocol() {
        assert_eq!(to_nanos(1_555_424_572), 1_555_424_572_000_000_000);
        assert_eq!(to_nanos(u32::MAX), 4_294_967_295_000_000_000);
    }
}
