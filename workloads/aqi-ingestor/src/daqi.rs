//! The UK Daily Air Quality Index (DAQI) for particulate matter: pure banding, no I/O.
//!
//! Bands in µg/m³ (24-hour mean), index 1 to 10:
//!
//! | index | 1    | 2     | 3     | 4     | 5     | 6     | 7     | 8     | 9      | 10    |
//! |-------|------|-------|-------|-------|-------|-------|-------|-------|--------|-------|
//! | PM2.5 | 0–11 | 12–23 | 24–35 | 36–41 | 42–47 | 48–53 | 54–58 | 59–64 | 65–70  | ≥ 71  |
//! | PM10  | 0–16 | 17–33 | 34–50 | 51–58 | 59–66 | 67–75 | 76–83 | 84–91 | 92–100 | ≥ 101 |
//!
//! The table is written in whole µg/m³, so the concentration is rounded to the nearest whole
//! number first, halves up (11.4 → 11 → 1, 11.5 → 12 → 2). That way every non-negative value falls
//! in exactly one band: the seed's job compared raw floats against these integer ranges and let
//! 11.5 fall through every band to index 10.

/// Upper bound (inclusive, whole µg/m³) of bands 1 to 9; band 10 is everything above.
const PM25_UPPER: [u32; 9] = [11, 23, 35, 41, 47, 53, 58, 64, 70];
const PM10_UPPER: [u32; 9] = [16, 33, 50, 58, 66, 75, 83, 91, 100];

/// The pollutants DAQI defines a band table for (of those Sensor.Community reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pollutant {
    /// PM2.5, Sensor.Community value type `P2`.
    Pm25,
    /// PM10, Sensor.Community value type `P1`.
    Pm10,
}

impl Pollutant {
    fn upper_bounds(self) -> &'static [u32; 9] {
        match self {
            Pollutant::Pm25 => &PM25_UPPER,
            Pollutant::Pm10 => &PM10_UPPER,
        }
    }
}

/// The DAQI index (1–10) of a 24-hour mean concentration in µg/m³, or `None` when the value is
/// negative or not finite (no band is defined for it).
pub(crate) fn index(pollutant: Pollutant, concentration: f64) -> Option<u8> {
    if !concentration.is_finite() || concentration < 0.0 {
        return None;
    }
    // `f64::round` rounds halves away from zero, which for non-negative values is "halves up",
    // and unlike `(x + 0.5).floor()` it is exact for every input.
    let rounded = concentration.round();
    let below = pollutant
        .upper_bounds()
        .iter()
        .take_while(|&&upper| f64::from(upper) < rounded)
        .count();
    // `below` is at most 9, so the index is 1..=10.
    Some(below as u8 + 1)
}

/// PM2.5 index (`P2`).
pub(crate) fn pm25(concentration: f64) -> Option<u8> {
    index(Pollutant::Pm25, concentration)
}

/// PM10 index (`P1`).
pub(crate) fn pm10(concentration: f64) -> Option<u8> {
    index(Pollutant::Pm10, concentration)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every band edge of the table: the last value of a band, the rounding edge just below the
    /// next band (x.4 stays, x.5 moves up) and the first value of the next band.
    #[test]
    fn pm25_every_band_boundary() {
        let cases: &[(f64, u8)] = &[
            (0.0, 1),
            (11.0, 1),
            (11.4, 1),
            (11.49, 1),
            (11.5, 2),
            (12.0, 2),
            (23.0, 2),
            (23.4, 2),
            (23.5, 3),
            (24.0, 3),
            (35.0, 3),
            (35.4, 3),
            (35.5, 4),
            (36.0, 4),
            (41.0, 4),
            (41.4, 4),
            (41.5, 5),
            (42.0, 5),
            (47.0, 5),
            (47.4, 5),
            (47.5, 6),
            (48.0, 6),
            (53.0, 6),
            (53.4, 6),
            (53.5, 7),
            (54.0, 7),
            (58.0, 7),
            (58.4, 7),
            (58.5, 8),
            (59.0, 8),
            (64.0, 8),
            (64.4, 8),
            (64.5, 9),
            (65.0, 9),
            (70.0, 9),
            (70.4, 9),
            (70.5, 10),
            (71.0, 10),
            (899.9, 10),
        ];
        for &(c, want) in cases {
            assert_eq!(pm25(c), Some(want), "PM2.5 {c} µg/m³");
        }
    }

    #[test]
    fn pm10_every_band_boundary() {
        let cases: &[(f64, u8)] = &[
            (0.0, 1),
            (16.0, 1),
            (16.4, 1),
            (16.5, 2),
            (17.0, 2),
            (33.0, 2),
            (33.4, 2),
            (33.5, 3),
            (34.0, 3),
            (50.0, 3),
            (50.4, 3),
            (50.5, 4),
            (51.0, 4),
            (58.0, 4),
            (58.4, 4),
            (58.5, 5),
            (59.0, 5),
            (66.0, 5),
            (66.4, 5),
            (66.5, 6),
            (67.0, 6),
            (75.0, 6),
            (75.4, 6),
            (75.5, 7),
            (76.0, 7),
            (83.0, 7),
            (83.4, 7),
            (83.5, 8),
            (84.0, 8),
            (91.0, 8),
            (91.4, 8),
            (91.5, 9),
            (92.0, 9),
            (99.0, 9),
            (100.0, 9),
            (100.4, 9),
            (100.5, 10),
            (101.0, 10),
            (1899.9, 10),
        ];
        for &(c, want) in cases {
            assert_eq!(pm10(c), Some(want), "PM10 {c} µg/m³");
        }
    }

    #[test]
    fn the_seeds_gaps_are_closed() {
        // The seed matched 11.5 to no band (index 10) and ended PM10 band 9 at 99.
        assert_eq!(pm25(11.5), Some(2));
        assert_eq!(pm10(100.0), Some(9));
        assert_eq!(pm10(99.5), Some(9));
    }

    #[test]
    fn p1_is_pm10_and_p2_is_pm25_tables_differ() {
        // 14 µg/m³ is band 2 for PM2.5 but still band 1 for PM10: applying the wrong table (as
        // the seed did with P1) shows up here.
        assert_eq!(pm25(14.0), Some(2));
        assert_eq!(pm10(14.0), Some(1));
    }

    #[test]
    fn every_non_negative_value_has_exactly_one_band() {
        let mut previous = (1, 1);
        for tenth in 0..=20_000u32 {
            let c = f64::from(tenth) / 10.0;
            let now = (pm25(c).unwrap_or(0), pm10(c).unwrap_or(0));
            assert!(
                (1..=10).contains(&now.0) && (1..=10).contains(&now.1),
                "{c}"
            );
            // Monotone, never skipping a band.
            assert!(now.0 >= previous.0 && now.0 - previous.0 <= 1, "{c}");
            assert!(now.1 >= previous.1 && now.1 - previous.1 <= 1, "{c}");
            previous = now;
        }
        assert_eq!(previous, (10, 10));
    }

    #[test]
    fn negative_and_non_finite_have_no_band() {
        for c in [-0.1, -11.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(pm25(c), None, "{c}");
            assert_eq!(pm10(c), None, "{c}");
        }
    }
}
