//! Reading the watermarks, and the 24-hour windows, back from InfluxDB at start-up.
//!
//! The newest stored point of each sensor is `last()` of any field, grouped by `sensor_id`.
//! InfluxQL returns the point's own time only for a single selector (with several, the time is
//! the start of the range), and no one field is in every point (a DHT22 has no `P1`, a record
//! may lack coordinates), so there is one query per field key, each answering one row per
//! sensor, and the newest time per sensor wins. One request at a time keeps the answers (and
//! memory) small; this runs once per start.

use iot_common::influx::quote_ident;
use iot_common::{InfluxClient, Line, WriteError};
use serde_json::Value;

use crate::means::{self, StoredHour, Windows};
use crate::region::Region;
use crate::timestamp::EpochSeconds;
use crate::transform::READINGS_MEASUREMENT;
use crate::watermark::Watermarks;

/// Reads the newest stored point of every sensor in `measurement` into `watermarks`; returns
/// how many sensors InfluxDB knows.
pub(crate) async fn load_watermarks(
    client: &InfluxClient,
    measurement: &str,
    watermarks: &mut Watermarks,
) -> Result<usize, WriteError> {
    let measurement = quote_ident(measurement);
    let keys = match client
        .query(&format!("SHOW FIELD KEYS FROM {measurement}"))
        .await
    {
        Ok(results) => results
            .into_iter()
            .flat_map(|r| r.series)
            .flat_map(|s| s.values)
            .filter_map(|row| row.first().and_then(Value::as_str).map(str::to_owned))
            .collect::<Vec<_>>(),
        // A database that does not exist yet holds no readings.
        Err(WriteError::Query(msg)) if msg.contains("database not found") => return Ok(0),
        Err(e) => return Err(e),
    };
    let before = watermarks.len();
    for key in keys {
        let q = format!(
            "SELECT last({}) FROM {measurement} GROUP BY \"sensor_id\"",
            quote_ident(&key)
        );
        for series in client.query(&q).await?.into_iter().flat_map(|r| r.series) {
            let Some(sensor) = series.tags.get("sensor_id").and_then(|s| s.parse().ok()) else {
                continue;
            };
            let newest = series
                .values
                .iter()
                .filter_map(|row| row.first().and_then(Value::as_i64))
                .max();
            if let Some(t) = newest.and_then(nanos_to_seconds) {
                watermarks.seed(sensor, t);
            }
        }
    }
    Ok(watermarks.len() - before)
}

/// Rebuilds the 24-hour windows from the 5-minute readings stored in the last day, so that a
/// restart needs no day of warm-up. `readings` holds the newest stored reading per sensor (see
/// [`load_watermarks`]); `now` is the current time.
///
/// InfluxDB sums each hour per series (one query per hour keeps each answer to one row per
/// sensor); sums of values with at most two decimals, as the feed sends them, come back exactly
/// as the live window formed them. Hours holding a reading of an indoor sensor are left out, as
/// they are live, and so are sensors outside the region. Returns the sensors rebuilt.
pub(crate) async fn load_windows(
    client: &InfluxClient,
    readings: &Watermarks,
    region: Option<&Region>,
    now: EpochSeconds,
    windows: &mut Windows,
) -> Result<usize, WriteError> {
    let now_hour = now / 3600;
    // One hour more than a window, so that a reading in the hour before the current one still
    // finds its whole window; and the hour ahead, for readings up to the tolerated clock skew.
    let first = now_hour.saturating_sub(means::HOURS);
    windows.set_complete_from_hour(first);
    let measurement = quote_ident(READINGS_MEASUREMENT);
    for hour in first..=now_hour + 1 {
        let ns = |h: u32| i64::from(h) * 3_600_000_000_000;
        let (from, to) = (ns(hour), ns(hour + 1));
        let q = format!(
            "SELECT sum(\"P1\"), count(\"P1\"), sum(\"P2\"), count(\"P2\"), max(\"indoor\"), \
             last(\"latitude\"), last(\"longitude\") FROM {measurement} \
             WHERE time >= {from} AND time < {to} GROUP BY *"
        );
        let results = match client.query(&q).await {
            Ok(results) => results,
            Err(WriteError::Query(msg)) if msg.contains("database not found") => return Ok(0),
            Err(e) => return Err(e),
        };
        for series in results.into_iter().flat_map(|r| r.series) {
            let tag = |k: &str| series.tags.get(k).map_or("", String::as_str);
            let Ok(sensor) = tag("sensor_id").parse::<u64>() else {
                continue;
            };
            let Some(newest) = readings.stored(sensor) else {
                continue;
            };
            let Some(row) = series.values.first() else {
                continue;
            };
            let num = |i: usize| row.get(i + 1).and_then(Value::as_f64);
            if num(4).is_some_and(|indoor| indoor > 0.0) {
                continue;
            }
            let coords = num(5).zip(num(6));
            if region.is_some_and(|r| !r.contains_sensor(tag("country"), coords)) {
                continue;
            }
            let pollutant = |sum: Option<f64>, count: Option<f64>| {
                let n = u16::try_from(count? as u64).ok().filter(|&n| n > 0)?;
                Some((means::centi(sum?)?, n))
            };
            let mut tags = String::new();
            // The same tags, in the same order, as the live path writes (see transform).
            let _ = Line::new(&mut tags, "")
                .tag("sensor_id", tag("sensor_id"))
                .tag("location_id", tag("location_id"))
                .tag("country", tag("country"))
                .tag("sensor_type", tag("sensor_type"));
            windows.add_stored_hour(&StoredHour {
                sensor,
                tags: &tags,
                coords,
                newest,
                hour,
                pm10: pollutant(num(0), num(1)),
                pm25: pollutant(num(2), num(3)),
            });
        }
    }
    Ok(windows.len())
}

fn nanos_to_seconds(ns: i64) -> Option<EpochSeconds> {
    EpochSeconds::try_from(ns.div_euclid(1_000_000_000))
        .ok()
        .filter(|&t| t != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_become_whole_seconds() {
        assert_eq!(
            nanos_to_seconds(1_555_424_572_000_000_000),
            Some(1_555_424_572)
        );
        assert_eq!(
            nanos_to_seconds(1_555_424_572_999_999_999),
            Some(1_555_424_572)
        );
        assert_eq!(nanos_to_seconds(0), None);
        assert_eq!(nanos_to_seconds(-5), None);
    }
}
