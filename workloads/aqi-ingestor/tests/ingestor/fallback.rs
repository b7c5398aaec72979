//! Our own 24-hour means: a scripted Sensor.Community whose 24-hour file is fresh, then empty,
//! stale and failing, then back, while 5-minute readings keep coming; and a restart of the
//! ingestor in the middle. Every computed mean, coverage and index is checked exactly against
//! values this test computes on its own from the readings it served, in a real InfluxDB.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use iot_testkit::influx::InfluxServer;
use iot_testkit::process::Service;
use iot_testkit::wait::{self, default_timeout};

use crate::api::Api;
use crate::common::{DB, service};
use crate::upstream::{LONDON, Place, record_at, snapshot};

const DAILY: &str = "/static/v2/data.24h.json";
const FIVE_MIN: &str = "/static/v2/data.json";

fn feed_time(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .expect("valid time")
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A PM record of `sensor` at `t` (epoch seconds), outdoors unless `indoor`.
fn pm_at(sensor: u64, t: i64, p1: &str, p2: &str, indoor: bool) -> String {
    let place = Place { indoor, ..LONDON };
    record_at(sensor, &feed_time(t), place, &[("P1", p1), ("P2", p2)])
}

/// The readings served, per sensor: (time, P1, P2) as the feed wrote them.
type Served = BTreeMap<u64, Vec<(i64, String, String)>>;

/// The DAQI band of a concentration (from the table in docs/aqi-ingestor.md, written out here
/// again rather than taken from the crate).
fn band(upper: [i64; 9], x: f64) -> i64 {
    let whole = x.round() as i64;
    1 + upper.iter().filter(|&&u| u < whole).count() as i64
}
const PM10: [i64; 9] = [16, 33, 50, 58, 66, 75, 83, 91, 100];
const PM25: [i64; 9] = [11, 23, 35, 41, 47, 53, 58, 64, 70];

/// What a computed point at `t` must hold: P1, P2, aqi_pm10, aqi_pm25, aqi, coverage.
#[derive(Debug, PartialEq)]
struct Expected {
    p1: f64,
    p2: f64,
    aqi_pm10: Option<i64>,
    aqi_pm25: Option<i64>,
    aqi: Option<i64>,
    coverage: f64,
}

/// The 24-hour mean at `t` from the readings, by the rule in docs/aqi-ingestor.md: the 24 UTC
/// hours ending with t's hour, hourly means of values taken to 0.01, their mean, 18 hours for an
/// index.
fn expected(readings: &[(i64, String, String)], t: i64) -> Expected {
    let last_hour = t.div_euclid(3600);
    let mut hours: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    for (rt, p1, p2) in readings {
        let h = rt.div_euclid(3600);
        if *rt > t || h <= last_hour - 24 {
            continue;
        }
        let centi = |s: &str| (s.parse::<f64>().expect("number") * 100.0).round() as i64;
        let e = hours.entry(h).or_default();
        e.0 += centi(p1);
        e.1 += centi(p2);
        e.2 += 1;
    }
    let n = hours.len() as i64;
    let mean = |pick: fn(&(i64, i64, i64)) -> i64| {
        let sum: f64 = hours.values().map(|e| pick(e) as f64 / e.2 as f64).sum();
        (sum / n as f64).round() / 100.0
    };
    let (p1, p2) = (mean(|e| e.0), mean(|e| e.1));
    let indexed = n >= 18;
    let aqi_pm10 = indexed.then(|| band(PM10, p1));
    let aqi_pm25 = indexed.then(|| band(PM25, p2));
    Expected {
        p1,
        p2,
        aqi_pm10,
        aqi_pm25,
        aqi: aqi_pm10.max(aqi_pm25),
        coverage: format!("{:.4}", n as f64 / 24.0).parse().expect("number"),
    }
}

/// The points of `sensor` in air_quality: (time, origin, the computed fields).
async fn points(influx: &InfluxServer, sensor: u64) -> Vec<(i64, String, Expected)> {
    let rows = influx
        .rows(
            DB,
            &format!(
                "SELECT origin, P1, P2, aqi_pm10, aqi_pm25, aqi, coverage FROM air_quality \
                 WHERE sensor_id = '{sensor}' ORDER BY time"
            ),
        )
        .await;
    rows.into_iter()
        .map(|r| {
            let f = |i: usize| r[i].as_f64().unwrap_or(f64::NAN);
            (
                r[0].as_i64().unwrap_or(0) / 1_000_000_000,
                r[1].as_str().unwrap_or("").to_string(),
                Expected {
                    p1: f(2),
                    p2: f(3),
                    aqi_pm10: r[4].as_i64(),
                    aqi_pm25: r[5].as_i64(),
                    aqi: r[6].as_i64(),
                    coverage: f(7),
                },
            )
        })
        .collect()
}

async fn wait_for_point(influx: &InfluxServer, sensor: u64, t: i64, origin: &str) {
    let what = format!("a {origin} point of sensor {sensor} at {t}");
    wait::until(&what, default_timeout(), || async move {
        let all = points(influx, sensor).await;
        if all.iter().any(|(pt, o, _)| *pt == t && o == origin) {
            Ok(())
        } else {
            Err(format!("it has {all:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Polls of the daily feed so far, whatever their outcome.
async fn daily_polls(daemon: &Service) -> f64 {
    let mut polls = 0.0;
    for outcome in ["written", "no_new", "empty", "fetch_error", "not_modified"] {
        let sample = format!(r#"aqi_feed_polls_total{{feed="daily",outcome="{outcome}"}}"#);
        polls += daemon.metric(&sample).await.unwrap_or(0.0);
    }
    polls
}

/// Waits for `n` more polls of the daily feed, so that a point that should not come had its
/// chance.
async fn let_it_poll(daemon: &Service, n: f64) {
    let want = daily_polls(daemon).await + n;
    wait::until(
        "the daily feed to be polled",
        default_timeout(),
        || async move {
            let polls = daily_polls(daemon).await;
            if polls >= want {
                Ok(())
            } else {
                Err(format!("{polls} polls, want {want}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// 2-decimal values that move around: P1 in 20..80, P2 in 8..48.
fn values(sensor: u64, k: i64) -> (String, String) {
    let x = (k * 7919 + sensor as i64 * 104_729) % 6000;
    let p1 = 2000 + x;
    let p2 = 800 + (x * 13) % 4000;
    (
        format!("{}.{:02}", p1 / 100, p1 % 100),
        format!("{}.{:02}", p2 / 100, p2 % 100),
    )
}

#[tokio::test]
async fn computed_means_stand_in_for_an_empty_stale_or_failing_daily_file_across_a_restart() {
    let influx = InfluxServer::start().await;
    // The ingestor creates it too; querying must not race that.
    influx.query(DB, &format!("CREATE DATABASE {DB}")).await;
    let (api, url) = Api::start().await;
    let now0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // Sensor 1: a reading every 5 minutes for a day. 2: only the last 12 hours (no index).
    // 3: a day with a 4-hour gap. 4: indoors (never an index, never a computed mean).
    let mut served: Served = BTreeMap::new();
    let mut history = Vec::new();
    for k in 0..288 {
        let t = now0 - 600 - 300 * k;
        for sensor in 1..=4u64 {
            let keep = match sensor {
                2 => k < 144,
                3 => !(100..148).contains(&k),
                _ => true,
            };
            if keep {
                let (p1, p2) = values(sensor, k);
                history.push(pm_at(sensor, t, &p1, &p2, sensor == 4));
                served.entry(sensor).or_default().push((t, p1, p2));
            }
        }
    }
    let next_readings = |served: &mut Served, t: i64| {
        let mut records = Vec::new();
        for sensor in 1..=4u64 {
            let (p1, p2) = values(sensor, t);
            records.push(pm_at(sensor, t, &p1, &p2, sensor == 4));
            served.entry(sensor).or_default().push((t, p1, p2));
        }
        snapshot(&records)
    };
    let daily_at = |t: i64| {
        snapshot(
            &(1..=4)
                .map(|s| pm_at(s, t, "11.00", "6.00", s == 4))
                .collect::<Vec<_>>(),
        )
    };
    let args = ["--api-url", url.as_str()];
    let influx_url = influx.url();
    let start = || service(&influx_url, "24h", &args);

    // Fresh upstream: its means are the index; the readings are stored, nothing is computed.
    let fresh = now0 - 900;
    api.set(DAILY, 200, daily_at(fresh));
    api.set(FIVE_MIN, 200, snapshot(&history));
    let daemon = start().await;
    for sensor in 1..=4 {
        wait_for_point(&influx, sensor, fresh, "upstream").await;
    }
    let_it_poll(&daemon, 2.0).await;
    let stored: usize = served.values().map(Vec::len).sum();
    assert_eq!(
        influx.count(DB, "air_quality_5min", "P1").await,
        stored as u64,
        "every 5-minute reading is stored"
    );
    assert_eq!(
        daemon.metric("aqi_computed_means_written_total").await,
        Some(0.0)
    );
    assert_eq!(daemon.metric("aqi_upstream_usable").await, Some(1.0));

    // Empty, then stale, then failing: a computed mean at each new reading.
    let t1 = now0 - 500;
    let t2 = now0 - 400;
    let t3 = now0 - 300;
    for (t, status, daily) in [
        (t1, 200, "[]".to_string()),
        (t2, 200, daily_at(now0 - 7200)),
        (t3, 500, String::new()),
    ] {
        api.set(FIVE_MIN, 200, next_readings(&mut served, t));
        api.set(DAILY, status, daily);
        for sensor in 1..=3 {
            wait_for_point(&influx, sensor, t, "computed").await;
        }
    }
    assert_eq!(daemon.metric("aqi_upstream_usable").await, Some(0.0));

    // A new process with no history in its snapshot: the window comes back from InfluxDB.
    drop(daemon);
    let t4 = now0 - 200;
    api.set(FIVE_MIN, 200, next_readings(&mut served, t4));
    let daemon = start().await;
    for sensor in 1..=3 {
        wait_for_point(&influx, sensor, t4, "computed").await;
    }

    // Upstream is back. Its record older than the last computed mean is not written, the newer
    // ones are, and nothing is computed any more although new readings come.
    let back = now0 - 150;
    let mut records: Vec<String> = (1..=4)
        .map(|s| pm_at(s, back, "12.00", "7.00", s == 4))
        .collect();
    records.push(pm_at(2, t4 - 50, "99.00", "99.00", false));
    api.set(DAILY, 200, snapshot(&records));
    let t5 = now0 - 100;
    api.set(FIVE_MIN, 200, next_readings(&mut served, t5));
    for sensor in 1..=4 {
        wait_for_point(&influx, sensor, back, "upstream").await;
    }
    let_it_poll(&daemon, 2.0).await;
    assert_eq!(daemon.metric("aqi_upstream_usable").await, Some(1.0));

    // The whole history of each sensor's index, exactly.
    for sensor in 1..=4u64 {
        let got = points(&influx, sensor).await;
        let times: Vec<(i64, &str)> = got.iter().map(|(t, o, _)| (*t, o.as_str())).collect();
        let want_times: Vec<(i64, &str)> = if sensor == 4 {
            vec![(fresh, "upstream"), (back, "upstream")]
        } else {
            vec![
                (fresh, "upstream"),
                (t1, "computed"),
                (t2, "computed"),
                (t3, "computed"),
                (t4, "computed"),
                (back, "upstream"),
            ]
        };
        assert_eq!(
            times, want_times,
            "sensor {sensor}: one mean at a time, in order"
        );
        for (t, origin, fields) in &got {
            if origin == "computed" {
                let want = expected(&served[&sensor], *t);
                assert_eq!(fields, &want, "sensor {sensor} at {t}");
            }
        }
    }
    // The designed coverages: a full day, half a day, a day with a gap.
    let at_t4 = |sensor: u64| expected(&served[&sensor], t4);
    assert!(at_t4(1).aqi.is_some() && at_t4(1).coverage == 1.0);
    assert!(at_t4(2).aqi.is_none() && at_t4(2).coverage < 0.75);
    assert!(at_t4(3).aqi.is_some() && (0.75..1.0).contains(&at_t4(3).coverage));
    // One series per sensor: computed means share the upstream ones' tags.
    let series = influx
        .query(DB, "SHOW SERIES FROM air_quality WHERE sensor_id = '1'")
        .await;
    assert_eq!(
        series["results"][0]["series"][0]["values"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{series}"
    );
    assert!(
        api.asked().iter().all(|p| p == DAILY || p == FIVE_MIN),
        "only the two files were asked for: {:?}",
        api.asked()
    );
}
