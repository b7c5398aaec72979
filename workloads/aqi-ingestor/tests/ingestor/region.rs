//! Regional deployments: the filter API brings only the region's 5-minute data (and a bad body
//! from it never stops the loop), and every source, files included, is filtered locally by the
//! same region, in each of its three forms.

use std::time::{SystemTime, UNIX_EPOCH};

use iot_testkit::influx::InfluxServer;
use iot_testkit::wait::{self, default_timeout};

use crate::api::Api;
use crate::common::{DB, ingestor, run_once, service};
use crate::upstream::{Place, record_at, snapshot};

/// An address nothing listens on: a dry run must not need InfluxDB.
const NO_INFLUX: &str = "http://127.0.0.1:9";

fn feed_time(t: u64) -> String {
    jiff::Timestamp::from_second(t as i64)
        .expect("valid time")
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A PM record of `sensor` at `time` in `country` at `lat`, `lon` (empty for no coordinates).
fn located(sensor: u64, time: &str, country: &str, lat: &str, lon: &str, p1: &str) -> String {
    located_in(sensor, time, country, lat, lon, p1, false)
}

fn located_in(
    sensor: u64,
    time: &str,
    country: &str,
    lat: &str,
    lon: &str,
    p1: &str,
    indoor: bool,
) -> String {
    let place = Place {
        country,
        lat,
        lon,
        indoor,
    };
    record_at(sensor, time, place, &[("P1", p1), ("P2", "5.00")])
}

/// London, Paris, Dublin, and a British sensor without coordinates.
fn europe(time: &str) -> String {
    snapshot(&[
        located(1, time, "GB", "51.5074", "-0.1278", "10.00"),
        located(2, time, "FR", "48.8566", "2.3522", "20.00"),
        located(3, time, "IE", "53.3498", "-6.2603", "30.00"),
        located(4, time, "GB", "", "", "40.00"),
    ])
}

/// The sensor ids in a dry run's output, in order.
fn sensors(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| l.split("sensor_id=").nth(1))
        .filter_map(|rest| rest.split([',', ' ']).next()?.parse().ok())
        .collect()
}

#[test]
fn a_file_source_obeys_each_form_of_region() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("europe.json");
    std::fs::write(&file, europe("2024-01-15 10:00:00")).expect("write");
    let file = file.to_string_lossy().into_owned();
    for (flag, value, want) in [
        ("--region-countries", "gb,IE", vec![1, 3, 4]),
        ("--region-box", "49.5,-11,59,2", vec![1, 3]),
        ("--region-area", "51.5,-0.12,50", vec![1]),
        ("--region-area", "51.5,-0.12,400", vec![1, 2]),
    ] {
        let run = run_once(&[
            "--dry-run",
            "--source",
            &file,
            "--influx-url",
            NO_INFLUX,
            flag,
            value,
        ]);
        assert!(run.success, "{flag} {value}:\n{}", run.stderr);
        assert_eq!(
            sensors(&run.stdout),
            want,
            "{flag} {value}:\n{}",
            run.stdout
        );
        assert_eq!(
            run.u64("records"),
            4,
            "{flag} {value}: every record counted"
        );
    }
}

#[test]
fn readings_from_a_file_obey_the_region_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("europe.json");
    std::fs::write(&file, europe("2024-01-15 10:00:00")).expect("write");
    let run = run_once(&[
        "--dry-run",
        "--source",
        "none",
        "--readings-source",
        &file.to_string_lossy(),
        "--influx-url",
        NO_INFLUX,
        "--region-countries",
        "FR",
    ]);
    assert!(run.success, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("air_quality_5min,sensor_id=2,"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("air_quality,sensor_id=2,")
            && lines[1].contains("origin=\"computed\""),
        "{}",
        lines[1]
    );
}

#[test]
fn invalid_regions_are_refused_with_what_to_fix() {
    for (flag, value, fragment) in [
        (
            "--region-box",
            "60,-1,50,1",
            "south (60) must be below north (50)",
        ),
        ("--region-area", "51,0,0", "radius must be above 0"),
        (
            "--region-area",
            "91,0,10",
            "latitude must be between -90 and 90",
        ),
        ("--region-countries", "GBR", "two-letter"),
    ] {
        let out = ingestor()
            .args(["--dry-run", "--once", flag, value])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(stderr.contains(fragment), "{flag} {value}: {stderr}");
    }
    let out = ingestor()
        .args(["--dry-run", "--once", "--region-countries", "GB"])
        .args(["--region-box", "49,-8,60,2"])
        .output()
        .expect("run");
    assert!(!out.status.success(), "two forms at once are refused");
}

async fn count(influx: &InfluxServer, q: &str) -> u64 {
    influx
        .rows(DB, q)
        .await
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

async fn wait_for(influx: &InfluxServer, q: &str, want: u64) {
    let what = format!("{q} to give {want}");
    wait::until(&what, default_timeout(), || async move {
        match count(influx, q).await {
            n if n == want => Ok(()),
            n => Err(n.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn the_filter_api_is_asked_for_the_region_and_a_bad_body_never_stops_the_loop() {
    let influx = InfluxServer::start().await;
    influx.query(DB, &format!("CREATE DATABASE {DB}")).await;
    let (api, url) = Api::start().await;
    let path = "/airrohr/v1/filter/country=GB";
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (t1, t2) = (feed_time(now - 400), feed_time(now - 100));
    // The filter API has answered with trailing junk after a valid array: the records before it
    // are kept, the rest of the poll is a bad body, and polling goes on.
    api.set(
        path,
        200,
        format!("{}\n<p>upstream hiccup</p>", europe(&t1)),
    );
    let mut daemon = service(
        &influx.url(),
        "5min",
        &["--api-url", &url, "--region-countries", "GB"],
    )
    .await;
    let bad = r#"aqi_feed_polls_total{feed="readings",outcome="bad_body"}"#;
    daemon.wait_metric(bad, 2.0).await.unwrap();
    // The indoor sensor 5 is stored but never gets a mean.
    let indoor = located_in(5, &t2, "GB", "51.45", "-0.97", "50.00", true);
    let good = snapshot(&[
        located(1, &t2, "GB", "51.5074", "-0.1278", "11.00"),
        located(2, &t2, "FR", "48.8566", "2.3522", "21.00"),
        indoor,
    ]);
    api.set(path, 200, good);
    wait_for(
        &influx,
        "SELECT count(P1) FROM air_quality_5min WHERE sensor_id = '1'",
        2,
    )
    .await;
    wait_for(
        &influx,
        "SELECT count(P1) FROM air_quality_5min WHERE sensor_id = '5'",
        1,
    )
    .await;
    wait_for(
        &influx,
        "SELECT count(coverage) FROM air_quality WHERE sensor_id = '1' AND origin = 'computed'",
        2,
    )
    .await;
    assert!(daemon.process.is_running(), "the loop goes on");

    assert_eq!(
        count(
            &influx,
            "SELECT count(P1) FROM air_quality_5min WHERE country = 'FR'"
        )
        .await,
        0,
        "the local filter holds where the remote one did not"
    );
    assert_eq!(
        count(
            &influx,
            "SELECT count(P1) FROM air_quality WHERE sensor_id = '5'"
        )
        .await,
        0,
        "indoor sensors get no mean"
    );
    assert_eq!(
        count(
            &influx,
            "SELECT count(P1) FROM air_quality_5min WHERE sensor_id = '4'"
        )
        .await,
        1,
        "a country needs no coordinates"
    );
    let asked = api.asked();
    assert!(
        !asked.is_empty() && asked.iter().all(|p| p == path),
        "{asked:?}"
    );
}
