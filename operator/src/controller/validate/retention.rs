//! `influxdb.retention`, `influxdb.databaseRetention` and `influxdb.downsampling` resolved into
//! durations: how long each database keeps raw points, and the tiers beside them.

use crate::crd::InfluxDbSpec;

use super::InvalidSpec;
use super::model::{Retention, Tier};

/// InfluxDB keeps durations as int64 nanoseconds (about 292 years); 100 years stays well inside.
const MAX_KEEP_SECONDS: u64 = 5200 * WEEK;
const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
const WEEK: u64 = 7 * DAY;
/// Shorter buckets than a minute would run a continuous query more often than readings arrive
/// from most senders; longer than a week would leave too few points to draw.
const TIER_INTERVALS: std::ops::RangeInclusive<u64> = MINUTE..=WEEK;

/// A retention in seconds; `None` is `INF` (kept for ever).
pub fn retention_seconds(value: &str) -> Option<Option<u64>> {
    if value == "INF" {
        return Some(None);
    }
    let seconds = duration_seconds(value, &[('h', HOUR), ('d', DAY), ('w', WEEK)])?;
    (seconds <= MAX_KEEP_SECONDS).then_some(Some(seconds))
}

/// `<digits><unit>` in seconds, for the units allowed.
fn duration_seconds(value: &str, units: &[(char, u64)]) -> Option<u64> {
    let unit = value.chars().last()?;
    let (_, scale) = units.iter().find(|(u, _)| *u == unit)?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(*scale)
}

/// The shortest name of an interval (`60m` → `1h`), so equal intervals get one policy name.
pub fn interval_name(seconds: u64) -> String {
    if seconds.is_multiple_of(DAY) {
        format!("{}d", seconds / DAY)
    } else if seconds.is_multiple_of(HOUR) {
        format!("{}h", seconds / HOUR)
    } else {
        format!("{}m", seconds / MINUTE)
    }
}

pub(super) fn resolve(spec: &InfluxDbSpec) -> Result<Retention, InvalidSpec> {
    let raw = |field: &str, value: &str| {
        retention_seconds(value)
            .map(|seconds| (value.to_owned(), seconds))
            .ok_or_else(|| InvalidSpec::BadRetention {
                field: field.to_owned(),
                value: value.to_owned(),
            })
    };
    raw("influxdb.retention", &spec.retention)?;
    let per_db = &spec.database_retention;
    let dht = match &per_db.dht {
        Some(v) => raw("influxdb.databaseRetention.dht", v)?,
        None => raw("influxdb.retention", &spec.retention)?,
    };
    let aqi = match &per_db.aqi {
        Some(v) => raw("influxdb.databaseRetention.aqi", v)?,
        None => raw("influxdb.retention", &spec.retention)?,
    };
    if spec.external.is_some() && !spec.downsampling.is_empty() {
        return Err(InvalidSpec::DownsamplingWithExternal);
    }
    let mut tiers: Vec<(String, Tier)> = Vec::new();
    for tier in &spec.downsampling {
        let every_seconds =
            duration_seconds(&tier.every, &[('m', MINUTE), ('h', HOUR), ('d', DAY)])
                .filter(|s| TIER_INTERVALS.contains(s))
                .ok_or_else(|| InvalidSpec::BadTierInterval {
                    value: tier.every.clone(),
                })?;
        let (_, keep_seconds) = raw("influxdb.downsampling[].keep", &tier.keep)?;
        if let Some((first, _)) = tiers.iter().find(|(_, t)| t.every_seconds == every_seconds) {
            return Err(InvalidSpec::DuplicateTierInterval {
                first: first.clone(),
                second: tier.every.clone(),
            });
        }
        if keep_seconds.is_some_and(|k| k < every_seconds) {
            return Err(InvalidSpec::TierKeepsLessThanItsInterval {
                every: tier.every.clone(),
                keep: tier.keep.clone(),
            });
        }
        for (database, (retention, seconds)) in
            [(&spec.databases.dht, &dht), (&spec.databases.aqi, &aqi)]
        {
            if seconds.is_some_and(|s| s < 2 * every_seconds) {
                return Err(InvalidSpec::TierLongerThanRawRetention {
                    every: tier.every.clone(),
                    database: database.clone(),
                    retention: retention.clone(),
                });
            }
        }
        tiers.push((
            tier.every.clone(),
            Tier {
                every_seconds,
                keep: tier.keep.clone(),
                keep_seconds,
            },
        ));
    }
    let mut tiers: Vec<Tier> = tiers.into_iter().map(|(_, t)| t).collect();
    tiers.sort_by_key(|t| t.every_seconds);
    Ok(Retention {
        dht: dht.0,
        dht_seconds: dht.1,
        aqi: aqi.0,
        aqi_seconds: aqi.1,
        tiers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_yaml(yaml: &str) -> Result<Retention, InvalidSpec> {
        resolve(&serde_yaml::from_str(yaml).expect("influxdb spec"))
    }

    #[test]
    fn retention_is_per_database_with_the_common_one_as_default() {
        let r = resolve_yaml("{retention: 30d, databaseRetention: {dht: 7d}}").expect("valid");
        assert_eq!((r.dht.as_str(), r.dht_seconds), ("7d", Some(7 * DAY)));
        assert_eq!((r.aqi.as_str(), r.aqi_seconds), ("30d", Some(30 * DAY)));
        let r = resolve_yaml("{databaseRetention: {aqi: INF}}").expect("valid");
        assert_eq!((r.aqi.as_str(), r.aqi_seconds), ("INF", None));
        assert!(r.tiers.is_empty(), "no tiers by default");
    }

    #[test]
    fn tiers_are_sorted_finest_first_with_their_durations() {
        let r = resolve_yaml("{downsampling: [{every: 1h, keep: 104w}, {every: 5m, keep: INF}]}")
            .expect("valid");
        let got: Vec<_> = r
            .tiers
            .iter()
            .map(|t| (t.every_seconds, t.keep_seconds, t.policy()))
            .collect();
        assert_eq!(
            got,
            [
                (300, None, "ds_5m".to_owned()),
                (3600, Some(104 * WEEK), "ds_1h".to_owned())
            ]
        );
        assert_eq!(interval_name(60 * MINUTE), "1h");
        assert_eq!(interval_name(2 * DAY), "2d");
        assert_eq!(interval_name(90 * MINUTE), "90m");
    }

    #[test]
    fn tiers_that_cannot_work_are_refused_with_what_to_fix() {
        let cases = [
            ("{downsampling: [{every: 30s, keep: 1w}]}", "every \"30s\""),
            ("{downsampling: [{every: 8d, keep: 52w}]}", "from 1m to 7d"),
            (
                "{downsampling: [{every: 60m, keep: 1w}, {every: 1h, keep: 2w}]}",
                "\"60m\" and \"1h\"",
            ),
            (
                "{downsampling: [{every: 1d, keep: 12h}]}",
                "less than one interval",
            ),
            (
                "{retention: 1d, downsampling: [{every: 1d, keep: 52w}]}",
                "database dht keeps raw points 1d",
            ),
            (
                "{databaseRetention: {aqi: 1d}, downsampling: [{every: 1d, keep: 52w}]}",
                "database aqi",
            ),
            ("{downsampling: [{every: 1h, keep: 999999w}]}", "5200w"),
            ("{retention: 0d}", "influxdb.retention"),
            (
                "{external: {url: 'http://x:8086', credentialsSecret: s}, downsampling: [{every: 5m, keep: 1w}]}",
                "remove influxdb.external",
            ),
        ];
        for (yaml, expected) in cases {
            let message = resolve_yaml(yaml).expect_err(yaml).to_string();
            assert!(message.contains(expected), "{yaml}: {message}");
        }
    }
}
