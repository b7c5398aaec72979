//! InfluxDB's own account of its data, read in one query (`SHOW DIAGNOSTICS; SHOW SHARDS; SHOW
//! STATS`), and the streams measured between two such samples. Pure: parsing and arithmetic.
//!
//! - `SHOW DIAGNOSTICS` (`system`): InfluxDB's clock and when it started. Its clock times the
//!   window, and a new start time means its counters began again.
//! - `SHOW SHARDS`: each shard's database, retention policy and times. A shard group spans
//!   `end - start`; `expiry - end` is the policy's retention (0 for `INF`).
//! - `SHOW STATS` (`shard`): each shard's `diskBytes` (TSM files and write-ahead log) and
//!   `writePointsOk`, a counter since InfluxDB started.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::forecast::Stream;

/// The statement the operator sends, URL-encoded.
pub(crate) const QUERY: &str = "SHOW%20DIAGNOSTICS%3B%20SHOW%20SHARDS%3B%20SHOW%20STATS";

/// One reading of InfluxDB's statistics.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// InfluxDB's clock when it answered.
    pub(crate) at: Timestamp,
    /// When the InfluxDB process started: its counters count from here.
    pub(crate) started: Timestamp,
    pub(crate) shards: BTreeMap<u64, Shard>,
    pub(crate) policies: BTreeMap<Policy, PolicyTimes>,
}

/// A retention policy of a database: one stream of data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Policy {
    pub(crate) database: String,
    pub(crate) retention_policy: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PolicyTimes {
    /// `None`: kept forever.
    pub(crate) retention: Option<Duration>,
    pub(crate) shard_group: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Shard {
    pub(crate) policy: Policy,
    pub(crate) disk_bytes: u64,
    /// Points written to it since InfluxDB started.
    pub(crate) points: u64,
}

/// Why an answer is not a sample.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum StatsError {
    #[error("InfluxDB's answer is not JSON of the expected shape: {0}")]
    Shape(String),
    #[error("InfluxDB answered with an error: {0}")]
    Influx(String),
    #[error("InfluxDB's answer lacks {0}")]
    Missing(&'static str),
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<StatementResult>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Series {
    name: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    columns: Vec<String>,
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

impl Series {
    /// The rows as column name → value.
    fn rows(&self) -> impl Iterator<Item = BTreeMap<&str, &Value>> {
        self.values
            .iter()
            .map(|row| self.columns.iter().map(String::as_str).zip(row).collect())
    }
}

/// Parses the answer to [`QUERY`].
pub(crate) fn parse(body: &[u8]) -> Result<Sample, StatsError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| StatsError::Shape(e.to_string()))?;
    if let Some(error) = answer.results.iter().find_map(|r| r.error.clone()) {
        return Err(StatsError::Influx(error));
    }
    let [diagnostics, shards, stats] = answer.results.as_slice() else {
        return Err(StatsError::Shape(format!(
            "{} results, not 3",
            answer.results.len()
        )));
    };
    let system = diagnostics
        .series
        .iter()
        .find(|s| s.name == "system")
        .and_then(|s| s.rows().next())
        .ok_or(StatsError::Missing("the diagnostics' system section"))?;
    let time = |row: &BTreeMap<&str, &Value>, column: &'static str| {
        row.get(column)
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse::<Timestamp>().ok())
            .ok_or(StatsError::Missing(column))
    };
    let at = time(&system, "currentTime")?;
    let started = time(&system, "started")?;

    let mut policies = BTreeMap::new();
    let mut shard_policy = BTreeMap::new();
    for row in shards.series.iter().flat_map(Series::rows) {
        let text = |column| row.get(column).and_then(|v| v.as_str());
        let (Some(id), Some(database), Some(retention_policy)) = (
            row.get("id").and_then(|v| v.as_u64()),
            text("database"),
            text("retention_policy"),
        ) else {
            continue;
        };
        let policy = Policy {
            database: database.to_owned(),
            retention_policy: retention_policy.to_owned(),
        };
        if let (Ok(start), Ok(end), Ok(expiry)) = (
            time(&row, "start_time"),
            time(&row, "end_time"),
            time(&row, "expiry_time"),
        ) {
            let span = |from: Timestamp, to: Timestamp| {
                Duration::try_from(to.duration_since(from)).unwrap_or_default()
            };
            let retention = span(end, expiry);
            policies.insert(
                policy.clone(),
                PolicyTimes {
                    retention: (!retention.is_zero()).then_some(retention),
                    shard_group: span(start, end),
                },
            );
        }
        shard_policy.insert(id, policy);
    }

    let mut sample_shards = BTreeMap::new();
    for series in stats.series.iter().filter(|s| s.name == "shard") {
        let Some(id) = series.tags.get("id").and_then(|id| id.parse::<u64>().ok()) else {
            continue;
        };
        // A shard SHOW SHARDS does not list (dropped between the two statements) is skipped.
        let Some(policy) = shard_policy.get(&id) else {
            continue;
        };
        let Some(row) = series.rows().next() else {
            continue;
        };
        let count = |column| row.get(column).and_then(|v| v.as_u64()).unwrap_or(0);
        sample_shards.insert(
            id,
            Shard {
                policy: policy.clone(),
                disk_bytes: count("diskBytes"),
                points: count("writePointsOk"),
            },
        );
    }
    Ok(Sample {
        at,
        started,
        shards: sample_shards,
        policies,
    })
}

/// One stream as measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measured {
    pub(crate) policy: Policy,
    pub(crate) stream: Stream,
}

/// The streams between `previous` and `current`: the points written in the window over its
/// length, and the bytes per point of the shards written since InfluxDB started. Without a
/// previous sample of the same InfluxDB process, the window is the process's life. `None`
/// when the window is under a second.
///
/// Counters go like Prometheus' `increase`: a shard new in the window counts all its points,
/// one whose counter fell (InfluxDB restarted) counts from zero, and a dropped shard counts
/// nothing. Bytes per point come from the shards' own totals: after a restart a shard that
/// already held data counts those bytes against fewer points, which over-states the figure
/// (the forecast errs early) until that shard group ends.
pub(crate) fn measure(previous: Option<&Sample>, current: &Sample) -> Option<Vec<Measured>> {
    let previous = previous.filter(|p| p.started == current.started && p.at < current.at);
    let since = previous.map_or(current.started, |p| p.at);
    let window = Duration::try_from(current.at.duration_since(since)).ok()?;
    if window < Duration::from_secs(1) {
        return None;
    }
    #[derive(Default)]
    struct Totals {
        disk: u64,
        /// Bytes of the shards written since InfluxDB started, and their points.
        written_disk: u64,
        points: u64,
        /// Points written in the window.
        window_points: u64,
    }
    let mut by_policy: BTreeMap<&Policy, Totals> = BTreeMap::new();
    for (id, shard) in &current.shards {
        let before = previous
            .and_then(|p| p.shards.get(id))
            .map_or(0, |s| s.points);
        let written = if shard.points >= before {
            shard.points - before
        } else {
            shard.points
        };
        let totals = by_policy.entry(&shard.policy).or_default();
        totals.disk += shard.disk_bytes;
        totals.window_points += written;
        if shard.points > 0 {
            totals.written_disk += shard.disk_bytes;
            totals.points += shard.points;
        }
    }
    Some(
        by_policy
            .into_iter()
            .map(|(policy, totals)| {
                let times = current.policies.get(policy).copied();
                let bytes_per_point = if totals.points > 0 {
                    totals.written_disk as f64 / totals.points as f64
                } else {
                    0.0
                };
                Measured {
                    policy: policy.clone(),
                    stream: Stream {
                        used_bytes: totals.disk as f64,
                        points_per_second: totals.window_points as f64 / window.as_secs_f64(),
                        bytes_per_point,
                        retention: times.and_then(|t| t.retention),
                        shard_group: times.map_or(Duration::ZERO, |t| t.shard_group),
                    },
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SHOW DIAGNOSTICS; SHOW SHARDS; SHOW STATS` from Debian's influxd 1.6.7 after 20,000
    /// points were written to `dht` (trimmed to the sections read).
    const FIXTURE: &str = include_str!("fixtures/influxd-1.6.7.json");

    fn policy(database: &str, rp: &str) -> Policy {
        Policy {
            database: database.into(),
            retention_policy: rp.into(),
        }
    }

    #[test]
    fn a_real_answer_gives_shards_policies_and_the_clock() {
        let sample = parse(FIXTURE.as_bytes()).unwrap();
        assert_eq!(
            sample.started,
            "2026-12-06T17:09:41.138966269Z".parse().unwrap()
        );
        let dht = &sample.shards[&1];
        assert_eq!(dht.policy, policy("dht", "autogen"));
        assert_eq!((dht.disk_bytes, dht.points), (140_642, 20_000));
        // autogen of a new database is INF in 7 d groups; _internal's monitor policy 7 d in 1 d.
        assert_eq!(
            sample.policies[&policy("dht", "autogen")],
            PolicyTimes {
                retention: None,
                shard_group: Duration::from_secs(7 * 86_400)
            }
        );
        assert_eq!(
            sample.policies[&policy("_internal", "monitor")],
            PolicyTimes {
                retention: Some(Duration::from_secs(7 * 86_400)),
                shard_group: Duration::from_secs(86_400)
            }
        );
    }

    #[test]
    fn the_first_sample_measures_since_influxdb_started() {
        let sample = parse(FIXTURE.as_bytes()).unwrap();
        let streams = measure(None, &sample).unwrap();
        let dht = streams
            .iter()
            .find(|m| m.policy == policy("dht", "autogen"))
            .unwrap();
        let life = sample.at.duration_since(sample.started).as_secs_f64();
        assert!((dht.stream.points_per_second - 20_000.0 / life).abs() < 1e-9);
        assert!((dht.stream.bytes_per_point - 140_642.0 / 20_000.0).abs() < 1e-9);
        assert_eq!(dht.stream.used_bytes, 140_642.0);
    }

    fn shard(p: &Policy, disk: u64, points: u64) -> Shard {
        Shard {
            policy: p.clone(),
            disk_bytes: disk,
            points,
        }
    }

    fn sample(at: i64, started: i64, shards: &[(u64, Shard)]) -> Sample {
        Sample {
            at: Timestamp::from_second(at).unwrap(),
            started: Timestamp::from_second(started).unwrap(),
            shards: shards.iter().cloned().collect(),
            policies: BTreeMap::new(),
        }
    }

    #[test]
    fn a_window_counts_new_shards_whole_and_dropped_ones_not_at_all() {
        let p = policy("dht", "autogen");
        let before = sample(
            1000,
            0,
            &[(1, shard(&p, 900, 500)), (2, shard(&p, 100, 100))],
        );
        // Shard 1 dropped by retention, shard 2 wrote 300 more, shard 3 is new with 200.
        let after = sample(
            1100,
            0,
            &[(2, shard(&p, 400, 400)), (3, shard(&p, 200, 200))],
        );
        let m = &measure(Some(&before), &after).unwrap()[0];
        assert_eq!(m.stream.points_per_second, 5.0);
        assert_eq!(m.stream.used_bytes, 600.0);
        assert_eq!(m.stream.bytes_per_point, 1.0);
    }

    #[test]
    fn a_restart_counts_from_zero() {
        let p = policy("dht", "autogen");
        let before = sample(1000, 0, &[(1, shard(&p, 900, 5000))]);
        // Restarted at 1050: the counter begins again.
        let after = sample(1100, 1050, &[(1, shard(&p, 950, 100))]);
        let m = &measure(Some(&before), &after).unwrap()[0];
        assert_eq!(m.stream.points_per_second, 2.0);
        // 950 bytes over 100 points: the older data counts against the new points.
        assert_eq!(m.stream.bytes_per_point, 9.5);
    }

    #[test]
    fn a_window_under_a_second_measures_nothing() {
        let p = policy("dht", "autogen");
        let s = sample(1000, 1000, &[(1, shard(&p, 1, 1))]);
        assert_eq!(measure(None, &s), None);
    }

    #[test]
    fn bad_answers_say_what_is_wrong() {
        assert!(matches!(parse(b"<html>"), Err(StatsError::Shape(_))));
        assert_eq!(
            parse(br#"{"results":[{"error":"error authorizing query: x not authorized"}]}"#),
            Err(StatsError::Influx(
                "error authorizing query: x not authorized".into()
            ))
        );
        assert_eq!(
            parse(br#"{"results":[{},{},{}]}"#),
            Err(StatsError::Missing("the diagnostics' system section"))
        );
    }
}
