//! Reading the watermarks back from InfluxDB at start-up.
//!
//! The newest stored point of each sensor is `last()` of any field, grouped by `sensor_id`.
//! InfluxQL returns the point's own time only for a single selector (with several, the time is
//! the start of the range), and no one field is in every point (a DHT22 has no `P1`, a record
//! may lack coordinates), so there is one query per field key, each answering one row per
//! sensor, and the newest time per sensor wins. One request at a time keeps the answers (and
//! memory) small; this runs once per start.

use iot_common::influx::quote_ident;
use iot_common::{InfluxClient, WriteError};
use serde_json::Value;

use crate::timestamp::EpochSeconds;
use crate::transform::MEASUREMENT;
use crate::watermark::Watermarks;

/// Reads the newest stored reading of every sensor into `watermarks`; returns how many sensors
/// InfluxDB knows.
pub async fn load_watermarks(
    client: &InfluxClient,
    watermarks: &mut Watermarks,
) -> Result<usize, WriteError> {
    let measurement = quote_ident(MEASUREMENT);
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
