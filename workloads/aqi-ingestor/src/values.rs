//! Which values are worth storing, and why the others are not.
//!
//! Every value is either a finite number inside the range its quantity can physically take, or
//! it is skipped with a [`SkipReason`] that ends up as a metric label. Nothing here is fatal to
//! the record, let alone the snapshot.

use crate::record::Scalar;

/// Why a value (or a location coordinate) was not written. Stable names: they are metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum SkipReason {
    /// Missing, `null` or `""`.
    Empty,
    /// Not a number: `"unknown"`, `true`, an object...
    NonNumeric,
    /// `"nan"`, `"inf"` and friends: InfluxDB rejects them and drops the whole batch.
    Nan,
    /// Below zero for a quantity that cannot be (concentrations, humidity, pressure, counts).
    Negative,
    /// Outside what the sensor can measure: SDS011 saturation (PM10 ≥ 1900, PM2.5 ≥ 900, as the
    /// official map filters), humidity above 100 %, a latitude of 200°...
    OutOfRange,
    /// The same `value_type` twice in one record; the first valid one is kept.
    Duplicate,
    /// A `value_type` that is empty or that names one of the ingestor's own fields (`aqi`,
    /// `latitude`, ...), which it would overwrite.
    InvalidName,
}

impl SkipReason {
    pub(crate) const ALL: [SkipReason; 7] = [
        SkipReason::Empty,
        SkipReason::NonNumeric,
        SkipReason::Nan,
        SkipReason::Negative,
        SkipReason::OutOfRange,
        SkipReason::Duplicate,
        SkipReason::InvalidName,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SkipReason::Empty => "empty",
            SkipReason::NonNumeric => "non_numeric",
            SkipReason::Nan => "nan",
            SkipReason::Negative => "negative",
            SkipReason::OutOfRange => "out_of_range",
            SkipReason::Duplicate => "duplicate",
            SkipReason::InvalidName => "invalid_name",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Field names the ingestor writes itself; a value type may not take them.
pub(crate) const RESERVED_FIELDS: [&str; 8] = [
    "aqi",
    "aqi_pm10",
    "aqi_pm25",
    "latitude",
    "longitude",
    "origin",
    "coverage",
    "indoor",
];

/// The numeric content of a scalar: `"12.35"`, `12.35` or `" 12.35 "` alike.
pub(crate) fn number(value: &Scalar<'_>) -> Result<f64, SkipReason> {
    let x = match value {
        Scalar::Missing | Scalar::Null => return Err(SkipReason::Empty),
        Scalar::Float(f) => *f,
        Scalar::UInt(n) => *n as f64,
        Scalar::Int(n) => *n as f64,
        Scalar::Text(t) => {
            let s = t.as_str().trim();
            if s.is_empty() {
                return Err(SkipReason::Empty);
            }
            s.parse::<f64>().map_err(|_| SkipReason::NonNumeric)?
        }
        Scalar::Bool(_) | Scalar::Other => return Err(SkipReason::NonNumeric),
    };
    if x.is_finite() {
        // "-0.00" is zero; written as "-0" it would look like a sign error.
        Ok(if x == 0.0 { 0.0 } else { x })
    } else {
        Err(SkipReason::Nan)
    }
}

/// The valid range of a quantity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Range {
    /// Inclusive lower bound. Values below are [`SkipReason::Negative`] when it is 0, else
    /// [`SkipReason::OutOfRange`].
    pub(crate) min: f64,
    pub(crate) max: Upper,
}

/// The upper bound of a [`Range`]; values beyond are [`SkipReason::OutOfRange`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Upper {
    /// Valid values are below this (a saturation code sits at or above it).
    Below(f64),
    /// Valid values are at most this.
    AtMost(f64),
}

const ANY: Range = Range {
    min: f64::NEG_INFINITY,
    max: Upper::Below(f64::INFINITY),
};

const NON_NEGATIVE: Range = Range {
    min: 0.0,
    max: Upper::Below(f64::INFINITY),
};

/// The range of a Sensor.Community value type. Unknown types keep any finite value: the feed
/// grows new sensors, and an unknown quantity may well be negative.
pub(crate) fn range_of(value_type: &str) -> Range {
    match value_type {
        // PM2.5 and PM1: SDS011 reports 999.9 for PM2.5 when its fan fails; the official map
        // drops PM2.5 ≥ 900. PM1 is a part of PM2.5, so the same ceiling holds.
        "P2" | "P0" => Range {
            min: 0.0,
            max: Upper::Below(900.0),
        },
        // PM10 (and PM4, a part of it): SDS011 saturates at 1999.9; the map drops PM10 ≥ 1900.
        "P1" | "P4" => Range {
            min: 0.0,
            max: Upper::Below(1900.0),
        },
        // Relative humidity in %. Values stuck at 99.9 or 1.0 are valid readings each on its
        // own; only a series shows they are stuck.
        "humidity" => Range {
            min: 0.0,
            max: Upper::AtMost(100.0),
        },
        // Air temperature near the ground in °C: the coldest and hottest ever recorded lie
        // inside; DHT22 read errors (e.g. -3276.8) do not.
        "temperature" => Range {
            min: -90.0,
            max: Upper::Below(100.0),
        },
        // Pascal. Everest's summit is about 33 kPa, the highest sea-level record 108.5 kPa.
        "pressure" | "pressure_at_sealevel" => Range {
            min: 0.0,
            max: Upper::Below(120_000.0),
        },
        // Particle number concentrations N05, N1, N25, N4, N10.
        t if t.len() > 1 && t.starts_with('N') && t[1..].bytes().all(|b| b.is_ascii_digit()) => {
            NON_NEGATIVE
        }
        // Typical particle size, CO2, radiation counts, noise levels in dB(A).
        "TS" | "co2_ppm" | "counts" | "counts_per_minute" | "hv_pulses" | "sample_time_ms" => {
            NON_NEGATIVE
        }
        t if t.starts_with("noise_") => NON_NEGATIVE,
        _ => ANY,
    }
}

/// A value of `value_type`, or why it is skipped.
pub(crate) fn validate(value_type: &str, value: &Scalar<'_>) -> Result<f64, SkipReason> {
    let x = number(value)?;
    check_range(range_of(value_type), x)
}

fn check_range(range: Range, x: f64) -> Result<f64, SkipReason> {
    if x < range.min {
        return Err(if range.min == 0.0 {
            SkipReason::Negative
        } else {
            SkipReason::OutOfRange
        });
    }
    let above = match range.max {
        Upper::Below(limit) => x >= limit,
        Upper::AtMost(limit) => x > limit,
    };
    if above {
        return Err(SkipReason::OutOfRange);
    }
    Ok(x)
}

/// A latitude (±90°) or longitude (±180°).
pub(crate) fn coordinate(value: &Scalar<'_>, limit: f64) -> Result<f64, SkipReason> {
    let x = number(value)?;
    if x.abs() > limit {
        return Err(SkipReason::OutOfRange);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::record::Text;

    fn text(s: &str) -> Scalar<'_> {
        Scalar::Text(Text(Cow::Borrowed(s)))
    }

    #[test]
    fn numbers_arrive_as_strings_or_numbers() {
        assert_eq!(number(&text("12.35")), Ok(12.35));
        assert_eq!(number(&text(" 7 ")), Ok(7.0));
        assert_eq!(number(&Scalar::Float(101968.66)), Ok(101968.66));
        assert_eq!(number(&Scalar::UInt(72)), Ok(72.0));
        assert_eq!(number(&Scalar::Int(-3)), Ok(-3.0));
    }

    #[test]
    fn each_kind_of_junk_has_its_reason() {
        assert_eq!(number(&text("")), Err(SkipReason::Empty));
        assert_eq!(number(&text("  ")), Err(SkipReason::Empty));
        assert_eq!(number(&Scalar::Null), Err(SkipReason::Empty));
        assert_eq!(number(&Scalar::Missing), Err(SkipReason::Empty));
        assert_eq!(number(&text("unknown")), Err(SkipReason::NonNumeric));
        assert_eq!(number(&text("12,5")), Err(SkipReason::NonNumeric));
        assert_eq!(number(&Scalar::Bool(true)), Err(SkipReason::NonNumeric));
        assert_eq!(number(&Scalar::Other), Err(SkipReason::NonNumeric));
        for nan in ["nan", "NaN", "-nan", "inf", "-Infinity"] {
            assert_eq!(number(&text(nan)), Err(SkipReason::Nan), "{nan}");
        }
    }

    #[test]
    fn sds011_saturation_is_out_of_range() {
        assert_eq!(
            validate("P1", &text("1999.90")),
            Err(SkipReason::OutOfRange)
        );
        assert_eq!(validate("P1", &text("1900")), Err(SkipReason::OutOfRange));
        assert_eq!(validate("P1", &text("1899.99")), Ok(1899.99));
        assert_eq!(validate("P2", &text("999.90")), Err(SkipReason::OutOfRange));
        assert_eq!(validate("P2", &text("900")), Err(SkipReason::OutOfRange));
        assert_eq!(validate("P2", &text("899.9")), Ok(899.9));
        // The real sample's P1 665.53 is high but possible.
        assert_eq!(validate("P1", &text("665.53")), Ok(665.53));
    }

    #[test]
    fn negative_concentrations_are_skipped_but_negative_temperatures_are_not() {
        assert_eq!(validate("P1", &text("-1.00")), Err(SkipReason::Negative));
        assert_eq!(validate("P2", &text("-0.50")), Err(SkipReason::Negative));
        assert_eq!(validate("humidity", &text("-1")), Err(SkipReason::Negative));
        assert_eq!(validate("N10", &text("-1")), Err(SkipReason::Negative));
        assert_eq!(
            validate("noise_LAeq", &text("-1")),
            Err(SkipReason::Negative)
        );
        assert_eq!(validate("temperature", &text("-1.60")), Ok(-1.6));
        assert_eq!(
            validate("temperature", &text("-3276.8")),
            Err(SkipReason::OutOfRange)
        );
        assert_eq!(validate("some_new_type", &text("-5")), Ok(-5.0));
    }

    #[test]
    fn humidity_is_at_most_100_percent_and_stuck_values_pass() {
        assert_eq!(validate("humidity", &text("100.00")), Ok(100.0));
        assert_eq!(validate("humidity", &text("99.90")), Ok(99.9));
        assert_eq!(validate("humidity", &text("1.00")), Ok(1.0));
        assert_eq!(
            validate("humidity", &text("100.1")),
            Err(SkipReason::OutOfRange)
        );
    }

    #[test]
    fn coordinates_are_bounded() {
        assert_eq!(coordinate(&text("48.7400"), 90.0), Ok(48.74));
        assert_eq!(coordinate(&text("-91"), 90.0), Err(SkipReason::OutOfRange));
        assert_eq!(coordinate(&text(""), 90.0), Err(SkipReason::Empty));
    }

    #[test]
    fn reasons_have_distinct_stable_names() {
        let names: std::collections::HashSet<_> =
            SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), SkipReason::ALL.len());
        for (i, r) in SkipReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
