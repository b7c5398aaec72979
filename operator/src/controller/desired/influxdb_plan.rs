//! What the InfluxDB setup sidecar brings each database to, as plain data (pure): raw retention,
//! downsampling tiers (a retention policy, a continuous query and a one-time backfill each) and
//! the table the dashboards pick their tier from. [`plan`] renders it as the file the sidecar
//! reads (`influxdb-setup.sh`); [`retention_policies`] lists it for whoever needs the durations.

use crate::controller::hash::content_hash;
use crate::controller::validate::{Influx, InfluxMode, Retention, Tier};

/// The retention policy of raw points: InfluxDB's default one, made the default again by setup.
pub const RAW_POLICY: &str = "autogen";
/// The operator's bookkeeping in each database, kept for ever: the dashboards' tier table and
/// the backfill marks. Continuous queries read only [`RAW_POLICY`], so they never see it.
pub const META_POLICY: &str = "iot_meta";
/// Rows `(time = a time range's length since the epoch, rp = policy)`: a dashboard over a range
/// of length r reads the policy of the newest row at or before r.
pub const TIER_TABLE: &str = "dashboard_tier";
/// One point per continuous query whose backfill is complete (tag `cq`).
pub const BACKFILL_MARKS: &str = "downsampling_backfill";
/// Roughly the points a Grafana panel draws per series (its width in pixels): a tier is used
/// once the range holds this many of its intervals, so a panel never draws fewer points than it
/// has room for, and never reads more than it can show by much.
pub const POINTS_PER_PANEL: u64 = 1000;
/// Continuous queries the setup owns start with this; it drops those of this prefix that the
/// plan no longer has.
pub const CQ_PREFIX: &str = "ds_";
/// A backfill statement covers about this many seconds of raw points, whole intervals: bounded
/// memory however much data there is.
const BACKFILL_CHUNK_SECONDS: u64 = 86_400;

/// One retention policy of one database, for capacity planning: what it keeps, how long, at
/// which resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub database: String,
    pub policy: String,
    /// `None` keeps points for ever.
    pub duration_seconds: Option<u64>,
    /// `None` for raw points (as often as they are written); a tier's bucket width otherwise.
    pub interval_seconds: Option<u64>,
}

/// Every retention policy the setup keeps data in, raw first then tiers finest first, for each
/// database; empty with an external InfluxDB (its policies are not the operator's).
pub fn retention_policies(influx: &Influx) -> Vec<RetentionPolicy> {
    let InfluxMode::Internal(internal) = &influx.mode else {
        return Vec::new();
    };
    databases(influx, &internal.retention)
        .into_iter()
        .flat_map(|db| {
            let raw = RetentionPolicy {
                database: db.name.clone(),
                policy: RAW_POLICY.to_owned(),
                duration_seconds: db.raw_seconds,
                interval_seconds: None,
            };
            let tiers = internal
                .retention
                .tiers
                .iter()
                .map(move |t| RetentionPolicy {
                    database: db.name.clone(),
                    policy: t.policy(),
                    duration_seconds: t.keep_seconds,
                    interval_seconds: Some(t.every_seconds),
                });
            std::iter::once(raw).chain(tiers)
        })
        .collect()
}

struct Database {
    name: String,
    raw: String,
    raw_seconds: Option<u64>,
}

fn databases(influx: &Influx, retention: &Retention) -> [Database; 2] {
    [
        Database {
            name: influx.dht_db.clone(),
            raw: retention.dht.clone(),
            raw_seconds: retention.dht_seconds,
        },
        Database {
            name: influx.aqi_db.clone(),
            raw: retention.aqi.clone(),
            raw_seconds: retention.aqi_seconds,
        },
    ]
}

/// The SELECT a tier's continuous query and its backfill share, split around where the backfill
/// puts its time range: `head WHERE time >= … AND time < … group`.
pub fn downsample_select(db: &str, tier: &Tier) -> (String, String) {
    let head = format!(
        "SELECT mean(*), min(*), max(*), count(*) INTO \"{db}\".\"{rp}\".:MEASUREMENT FROM \"{db}\".\"{RAW_POLICY}\"./.*/",
        rp = tier.policy()
    );
    let group = format!("GROUP BY time({}s), *", tier.every_seconds);
    (head, group)
}

/// The tier's continuous query: its name carries a hash of its text, so a changed query has a
/// new name and replaces the old one (InfluxDB cannot alter a continuous query). `RESAMPLE FOR`
/// two intervals: each run also redoes the interval before, for points that arrived late.
pub fn continuous_query(db: &str, tier: &Tier) -> (String, String) {
    let (head, group) = downsample_select(db, tier);
    let body = format!(
        "RESAMPLE FOR {}s BEGIN {head} {group} END",
        2 * tier.every_seconds
    );
    let hash = content_hash([db, body.as_str()]);
    let name = format!("{}_{}", tier.policy(), &hash[..8]);
    let statement = format!("CREATE CONTINUOUS QUERY \"{name}\" ON \"{db}\" {body}");
    (name, statement)
}

/// Which policy a dashboard reads for a time range, as rows (range length in seconds from which
/// a row applies, policy), shortest first, the first at 0. For a range r: of the sources whose
/// points reach r back (all with the longest keep if none does), the coarsest whose interval
/// fits [`POINTS_PER_PANEL`] times in r; raw when none does.
pub fn tier_table(raw_seconds: Option<u64>, tiers: &[Tier]) -> Vec<(u64, String)> {
    // (interval, keep, policy); raw's interval is 0: it is always fine enough.
    let sources: Vec<(u64, Option<u64>, String)> =
        std::iter::once((0, raw_seconds, RAW_POLICY.to_owned()))
            .chain(
                tiers
                    .iter()
                    .map(|t| (t.every_seconds, t.keep_seconds, t.policy())),
            )
            .collect();
    let choose = |range: u64| -> &str {
        let reaches = |keep: Option<u64>| keep.is_none_or(|k| k >= range);
        let longest = sources
            .iter()
            .map(|s| s.1.unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0);
        let candidates: Vec<_> = if sources.iter().any(|s| reaches(s.1)) {
            sources.iter().filter(|s| reaches(s.1)).collect()
        } else {
            sources
                .iter()
                .filter(|s| s.1.unwrap_or(u64::MAX) == longest)
                .collect()
        };
        let fine_enough = candidates
            .iter()
            .filter(|s| s.0.saturating_mul(POINTS_PER_PANEL) <= range)
            .max_by_key(|s| s.0);
        let finest = candidates.iter().min_by_key(|s| s.0);
        fine_enough.or(finest).map_or(RAW_POLICY, |s| s.2.as_str())
    };
    // The choice changes only where a range passes a keep or a tier's interval × points.
    let mut edges: Vec<u64> = sources
        .iter()
        .flat_map(|s| [s.1.unwrap_or(0), s.0.saturating_mul(POINTS_PER_PANEL)])
        .chain([0])
        .collect();
    edges.sort_unstable();
    edges.dedup();
    let mut rows: Vec<(u64, String)> = Vec::new();
    for edge in edges {
        // Just past the edge (a keep reaches up to and including itself).
        let policy = choose(edge + 1);
        if rows.last().is_none_or(|(_, p)| p != policy) {
            rows.push((edge, policy.to_owned()));
        }
    }
    rows
}

/// The file the setup sidecar reads: one tab-separated instruction per line.
///
/// - `database DB RETENTION`: create it, set its raw retention, grant the writer and reader.
/// - `run DB STATEMENT`: run it as the admin, in order (the bookkeeping policy, the tier table).
/// - `policy DB RP KEEP`: a tier's retention policy: created, or its duration altered.
/// - `cq DB NAME STATEMENT`: a tier's continuous query; the setup creates it if missing and drops
///   the database's other `ds_` queries (then their backfill marks).
/// - `backfill DB CQ RP EVERY CHUNK HEAD GROUP`: once per CQ, the raw points already stored, in
///   chunks of CHUNK seconds (whole intervals), up to the interval the query took over at.
pub fn plan(influx: &Influx, retention: &Retention) -> String {
    let mut lines = Vec::new();
    for db in databases(influx, retention) {
        let name = &db.name;
        lines.push(format!("database\t{name}\t{}", db.raw));
        lines.push(format!(
            "run\t{name}\tCREATE RETENTION POLICY \"{META_POLICY}\" ON \"{name}\" DURATION INF REPLICATION 1"
        ));
        let table = tier_table(db.raw_seconds, &retention.tiers);
        // Rows are overwritten in place and only the stale ones between them deleted after, so
        // a dashboard reading meanwhile always finds a row.
        for (from, policy) in &table {
            lines.push(format!(
                "run\t{name}\tINSERT INTO {META_POLICY} {TIER_TABLE} rp=\"{policy}\" {from}000000000"
            ));
        }
        let mut bounds: Vec<String> = table
            .iter()
            .map(|(from, _)| format!("{from}000000000"))
            .collect();
        for pair in bounds.windows(2) {
            lines.push(format!(
                "run\t{name}\tDELETE FROM \"{TIER_TABLE}\" WHERE time > {} AND time < {}",
                pair[0], pair[1]
            ));
        }
        if let Some(last) = bounds.pop() {
            lines.push(format!(
                "run\t{name}\tDELETE FROM \"{TIER_TABLE}\" WHERE time > {last}"
            ));
        }
        for tier in &retention.tiers {
            let rp = tier.policy();
            lines.push(format!("policy\t{name}\t{rp}\t{}", tier.keep));
            let (cq, statement) = continuous_query(name, tier);
            lines.push(format!("cq\t{name}\t{cq}\t{statement}"));
            let (head, group) = downsample_select(name, tier);
            let every = tier.every_seconds;
            let chunk = every * (BACKFILL_CHUNK_SECONDS / every).max(1);
            lines.push(format!(
                "backfill\t{name}\t{cq}\t{rp}\t{every}\t{chunk}\t{head}\t{group}"
            ));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    const DAY: u64 = 86_400;

    fn tier(every_seconds: u64, keep_seconds: Option<u64>) -> Tier {
        Tier {
            every_seconds,
            keep: keep_seconds.map_or("INF".into(), |k| format!("{}h", k / HOUR)),
            keep_seconds,
        }
    }

    fn policy_at(table: &[(u64, String)], range: u64) -> &str {
        table
            .iter()
            .rev()
            .find(|(from, _)| *from <= range)
            .map(|(_, p)| p.as_str())
            .expect("a row at 0")
    }

    #[test]
    fn a_year_reads_the_hourly_tier_a_day_reads_raw() {
        let tiers = [tier(5 * MIN, Some(90 * DAY)), tier(HOUR, Some(730 * DAY))];
        let table = tier_table(Some(30 * DAY), &tiers);
        assert_eq!(table[0], (0, "autogen".to_owned()));
        assert_eq!(policy_at(&table, DAY), "autogen");
        assert_eq!(policy_at(&table, 7 * DAY), "ds_5m");
        assert_eq!(policy_at(&table, 30 * DAY), "ds_5m");
        assert_eq!(policy_at(&table, 60 * DAY), "ds_1h");
        assert_eq!(policy_at(&table, 365 * DAY), "ds_1h");
        // Beyond every keep: the source that reaches furthest back.
        assert_eq!(policy_at(&table, 5 * 365 * DAY), "ds_1h");
    }

    #[test]
    fn a_range_past_a_tiers_keep_reads_a_tier_that_reaches_back() {
        // 5m tier kept 2 d, raw 30 d: a week cannot come from the 5m tier.
        let table = tier_table(Some(30 * DAY), &[tier(5 * MIN, Some(2 * DAY))]);
        assert_eq!(policy_at(&table, DAY), "autogen");
        assert_eq!(policy_at(&table, 7 * DAY), "autogen");
        // Without tiers there is one row.
        assert_eq!(tier_table(None, &[]), [(0, "autogen".to_owned())]);
    }

    #[test]
    fn a_changed_query_has_a_new_name_and_the_same_interval_prefix() {
        let (a, text) = continuous_query("dht", &tier(5 * MIN, None));
        let (b, _) = continuous_query("dht", &tier(10 * MIN, None));
        let (c, _) = continuous_query("aqi", &tier(5 * MIN, None));
        assert!(
            a.starts_with("ds_5m_") && b.starts_with("ds_10m_"),
            "{a} {b}"
        );
        assert_ne!(a, c);
        assert_eq!(
            text,
            format!(
                "CREATE CONTINUOUS QUERY \"{a}\" ON \"dht\" RESAMPLE FOR 600s BEGIN SELECT mean(*), min(*), max(*), count(*) INTO \"dht\".\"ds_5m\".:MEASUREMENT FROM \"dht\".\"autogen\"./.*/ GROUP BY time(300s), * END"
            )
        );
        // The keep is the policy's, not the query's: changing it alters the policy only.
        assert_eq!(a, continuous_query("dht", &tier(5 * MIN, Some(DAY))).0);
    }

    #[test]
    fn retention_policies_list_raw_then_tiers_per_database_and_nothing_for_an_external_one() {
        let model = crate::controller::fixtures::model(
            "{influxdb: {databaseRetention: {aqi: INF}, downsampling: [{every: 1h, keep: 104w}]}}",
        );
        let listed: Vec<_> = retention_policies(&model.influx)
            .into_iter()
            .map(|p| (p.database, p.policy, p.duration_seconds, p.interval_seconds))
            .collect();
        let rp = |db: &str, policy: &str, duration, interval| {
            (db.to_owned(), policy.to_owned(), duration, interval)
        };
        assert_eq!(
            listed,
            [
                rp("dht", "autogen", Some(30 * DAY), None),
                rp("dht", "ds_1h", Some(728 * DAY), Some(HOUR)),
                rp("aqi", "autogen", None, None),
                rp("aqi", "ds_1h", Some(728 * DAY), Some(HOUR)),
            ]
        );
        let external = crate::controller::fixtures::model(
            "{influxdb: {external: {url: 'http://influx:8086', credentialsSecret: creds}}}",
        );
        assert!(retention_policies(&external.influx).is_empty());
    }
}
