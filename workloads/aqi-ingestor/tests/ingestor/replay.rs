//! The real sample records into a real InfluxDB: exact counts, exact points, field types, and
//! dedup across runs and restarts (each run is a new process, so its watermarks can only come
//! from InfluxDB).

use aqi_ingestor::fetch::Source;
use iot_testkit::influx::InfluxServer;
use serde_json::json;

use crate::common::{
    self, DB, FIXTURES, SnapshotFile, fixture_source as source, ingest_once, ns, pairs,
};
use crate::upstream::{pm, record};

/// Points per field after every sample file, counted independently of the ingestor from the
/// files (262 distinct sensor readings; the v1 slice is there twice, as fragment and array).
const EXPECTED_FIELDS: &[(&str, u64)] = &[
    ("latitude", 262),
    ("longitude", 262),
    ("P1", 147),
    ("P2", 147),
    ("aqi_pm10", 147),
    ("aqi_pm25", 147),
    ("aqi", 147),
    ("temperature", 111),
    ("humidity", 109),
    ("pressure", 5),
    ("pressure_at_sealevel", 5),
    ("noise_LAeq", 2),
    ("counts_per_minute", 2),
];

#[tokio::test]
async fn replaying_every_real_sample_stores_each_reading_exactly_once() {
    let influx = InfluxServer::start().await;
    let mut written = 0;
    for &(name, _) in FIXTURES {
        let run = ingest_once(&influx.url(), &source(name));
        written += run.u64("written");
    }
    assert_eq!(
        written, 262,
        "the fragment's 243 readings again are not new"
    );
    for &(field, want) in EXPECTED_FIELDS {
        assert_eq!(
            influx.count(DB, "air_quality", field).await,
            want,
            "count({field})"
        );
    }

    // Run everything again: nothing is new, nothing changes.
    for &(name, records) in FIXTURES {
        let run = ingest_once(&influx.url(), &source(name));
        assert_eq!(run.u64("written"), 0, "{name}: {}", run.report);
        assert_eq!(run.u64("records"), records, "{name}");
        assert_eq!(run.outcome(), "no_new", "{name}");
    }
    assert_eq!(influx.count(DB, "air_quality", "latitude").await, 262);
}

#[tokio::test]
async fn a_stored_reading_has_its_tags_fields_types_and_time() {
    let influx = InfluxServer::start().await;
    ingest_once(
        &influx.url(),
        &source("basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json"),
    );
    let body = influx
        .query(
            DB,
            "SELECT P1, P2, aqi_pm10, aqi_pm25, aqi, latitude, longitude FROM air_quality \
             WHERE sensor_id = '6507' GROUP BY *",
        )
        .await;
    let series = &body["results"][0]["series"][0];
    assert_eq!(
        series["tags"],
        json!({"country": "NL", "location_id": "3287", "sensor_id": "6507", "sensor_type": "SDS011"})
    );
    assert_eq!(
        series["values"],
        json!([[ns("2019-04-16 14:22:52"), 20.4, 14.8, 2, 2, 2, 52.22, 5.27]])
    );

    let keys = influx.query(DB, "SHOW FIELD KEYS FROM air_quality").await;
    let types: std::collections::BTreeMap<String, String> =
        keys["results"][0]["series"][0]["values"]
            .as_array()
            .expect("field keys")
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap_or("").into(),
                    r[1].as_str().unwrap_or("").into(),
                )
            })
            .collect();
    for (field, kind) in [
        ("aqi", "integer"),
        ("aqi_pm10", "integer"),
        ("aqi_pm25", "integer"),
        ("P1", "float"),
        ("temperature", "float"),
        ("latitude", "float"),
    ] {
        assert_eq!(types.get(field).map(String::as_str), Some(kind), "{field}");
    }
}

#[tokio::test]
async fn after_a_restart_the_watermarks_come_back_from_influxdb() {
    let influx = InfluxServer::start().await;
    let file = SnapshotFile::new(&[
        pm(1, "2024-01-15 10:05:00", "10", "5"),
        pm(2, "2024-01-15 10:05:00", "10", "5"),
    ]);
    assert_eq!(ingest_once(&influx.url(), &file.source()).u64("written"), 2);

    // A new process: sensor 1 at 10:00 is older than what InfluxDB holds for it and must not
    // be written, although it never was (InfluxDB alone would take it as a new point).
    file.write(&[
        pm(1, "2024-01-15 10:00:00", "99", "99"),
        pm(1, "2024-01-15 10:10:00", "12", "6"),
        pm(2, "2024-01-15 10:05:00", "10", "5"),
        pm(3, "2024-01-15 09:00:00", "20", "10"),
    ]);
    let run = ingest_once(&influx.url(), &file.source());
    assert_eq!(run.u64("written"), 2, "{}", run.report);

    let times =
        |rows: Vec<(i64, serde_json::Value)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(
        times(pairs(&influx, "SELECT P1 FROM air_quality WHERE sensor_id = '1'").await),
        [ns("2024-01-15 10:05:00"), ns("2024-01-15 10:10:00")]
    );
    assert_eq!(
        times(pairs(&influx, "SELECT P1 FROM air_quality WHERE sensor_id = '3'").await),
        [ns("2024-01-15 09:00:00")]
    );
}

#[tokio::test]
async fn several_readings_of_one_sensor_in_any_order_are_all_written_once() {
    let influx = InfluxServer::start().await;
    let file = SnapshotFile::new(&[
        pm(7, "2024-01-15 10:03:00", "3", "1"),
        pm(7, "2024-01-15 10:01:00", "1", "1"),
        pm(7, "2024-01-15 10:02:00", "2", "1"),
        pm(7, "2024-01-15 10:01:00", "1", "1"),
    ]);
    let run = ingest_once(&influx.url(), &file.source());
    assert_eq!(run.u64("written"), 3, "the repeat of 10:01 is a duplicate");
    let p1: Vec<f64> = pairs(&influx, "SELECT P1 FROM air_quality")
        .await
        .into_iter()
        .filter_map(|r| r.1.as_f64())
        .collect();
    assert_eq!(p1, [1.0, 2.0, 3.0]);

    let again = ingest_once(&influx.url(), &file.source());
    assert_eq!(again.u64("written"), 0);
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 3);
}

#[tokio::test]
async fn credentials_are_used_when_influxdb_requires_them() {
    let influx = InfluxServer::start_with_auth("admin", "s3cret").await;
    let sample = source("luftdatenpumpe_doc_models_ldi_upstream.json");
    let denied = common::run_once(&["--influx-url", &influx.url(), "--source", &sample]);
    assert!(!denied.success, "no credentials, no writes");
    let run = common::ingestor()
        .args(["--once", "--log-format", "json", "--source", &sample])
        .args(["--influx-url", &influx.url()])
        .env("INFLUX_USERNAME", "admin")
        .env("INFLUX_PASSWORD", "s3cret")
        .output()
        .expect("run");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(influx.count(DB, "air_quality", "latitude").await, 5);
}

#[tokio::test]
async fn points_influxdb_refuses_for_good_do_not_hold_back_the_rest() {
    let influx = InfluxServer::start().await;
    influx.query(DB, &format!("CREATE DATABASE {DB}")).await;
    // Another writer stored `humidity` as a string: InfluxDB now refuses float humidity (in
    // this shard) for good.
    let conflict = format!(
        "air_quality,sensor_id=999 humidity=\"wet\" {}",
        ns("2024-01-15 09:00:00")
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/write?db={DB}", influx.url()))
        .body(conflict)
        .send()
        .await
        .expect("write");
    assert!(resp.status().is_success());

    let weather = || {
        record(
            1,
            "2024-01-15 10:00:00",
            &[("humidity", "50.00"), ("temperature", "5")],
        )
    };
    let file = SnapshotFile::new(&[
        weather(),
        pm(2, "2024-01-15 10:00:00", "10", "5"),
        pm(3, "2024-01-15 10:00:00", "20", "10"),
    ]);
    let path = file.source();
    // One line per request, so the refused batch comes first and the others after it.
    let run = common::run_once(&[
        "--influx-url",
        &influx.url(),
        "--source",
        &path,
        "--batch-lines",
        "1",
    ]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(
        (run.u64("written"), run.u64("rejected")),
        (2, 1),
        "{}",
        run.report
    );
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 2);

    // A new process knows only what InfluxDB stored, so it offers the refused reading once
    // more, and is refused again; nothing else is new. A poll whose every new reading was
    // refused says so, and fails.
    let again = common::run_once(&["--influx-url", &influx.url(), "--source", &path]);
    assert_eq!((again.u64("written"), again.u64("rejected")), (0, 1));
    assert_eq!(again.outcome(), "rejected");
    assert!(!again.success);

    // A running ingestor advances no watermark past a reading InfluxDB did not store, so a
    // changed snapshot that still holds it offers it again. In one batch with the others,
    // InfluxDB's partial write is written again in halves until the refused line is known.
    let mut poller = common::poller(&influx.url(), Source::File(file.path().to_owned())).await;
    assert_eq!(poller.poll().await.rejected, 1);
    assert_eq!(poller.watermarks.stored(1), None);
    assert!(poller.watermarks.stored(2).is_some());
    file.write(&[weather(), pm(4, "2024-01-15 10:00:00", "20", "10")]);
    let next = poller.poll().await;
    assert_eq!((next.written, next.rejected), (1, 1), "{:?}", next.error);
    assert_eq!(influx.count(DB, "air_quality", "P1").await, 3);
}
