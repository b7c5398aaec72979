//! Every InfluxQL query of the shipped Grafana dashboards runs against a real InfluxDB holding
//! data our own workloads wrote (sensor-sim → coap-server, aqi-ingestor from real
//! Sensor.Community records, and its own 24-hour means of a day of 5-minute readings) and must
//! return data: a dashboard cannot fail silently. The AQI dashboard's variables are the
//! reference's, so its links select them, and its IoT Data table links to the CSV download.

// Test helpers may unwrap: a failure here is a test failure with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use iot_operator::controller::desired::influxdb_plan;
use iot_operator::controller::validate::Tier;
use iot_testkit::bins::workspace_bin;
use iot_testkit::dashboards::{self, Macros, database_of, has_values, link_variables, queries};
use iot_testkit::influx::InfluxServer;
use iot_testkit::ports::{free_tcp_addr, free_udp_addr};
use iot_testkit::process::Service;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn write_workload_data(influx: &InfluxServer) {
    // DHT readings through the real CoAP path.
    let mut coap = free_udp_addr();
    let server = Service::start("coap-server", "/readyz", |http| {
        coap = free_udp_addr();
        let mut c = Command::new(workspace_bin("coap-server"));
        c.args(["--bind", &coap.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--influx-url", &influx.url()]);
        c
    })
    .await;
    let sim = Command::new(workspace_bin("sensor-sim"))
        .args(["--server", &coap.to_string()])
        .args(["--http-addr", &free_tcp_addr().to_string()])
        .args([
            "--sensors",
            "4",
            "--places",
            "kitchen,lab",
            "--interval",
            "0.05",
        ])
        .args(["--rounds", "10"])
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    drop(server);
    assert!(sim.success());
    assert_eq!(influx.count("dht", "temperature", "value").await, 40);

    // Air quality from real Sensor.Community records through the ingestor.
    let fixture =
        repo().join("workloads/aqi-ingestor/tests/fixtures/basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json");
    let aqi = Command::new(workspace_bin("aqi-ingestor"))
        .args(["--once", "--source", fixture.to_str().unwrap()])
        .args(["--influx-url", &influx.url()])
        .args(["--http-addr", &free_tcp_addr().to_string()])
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(aqi.success());
    assert!(influx.count("aqi", "air_quality", "aqi").await > 0);

    // A day of 5-minute readings of two sensors, up to a few minutes ago: the ingestor stores
    // them and writes its own 24-hour means (origin "computed", with their coverage).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut records = Vec::new();
    for k in 0..288 {
        let t = jiff::Timestamp::from_second(now - 300 - 300 * k).unwrap();
        let time = t.strftime("%Y-%m-%d %H:%M:%S");
        for (sensor, lat, lon) in [(90001, "51.5074", "-0.1278"), (90002, "53.4808", "-2.2426")] {
            records.push(format!(
                r#"{{"timestamp":"{time}","location":{{"id":{sensor},"country":"GB","latitude":"{lat}","longitude":"{lon}","indoor":0}},"sensor":{{"id":{sensor},"sensor_type":{{"name":"SDS011"}}}},"sensordatavalues":[{{"value":"{}.25","value_type":"P1"}},{{"value":"{}.50","value_type":"P2"}}]}}"#,
                20 + k % 30,
                8 + k % 10,
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let readings = dir.path().join("readings.json");
    std::fs::write(&readings, format!("[{}]", records.join(","))).unwrap();
    let computed = Command::new(workspace_bin("aqi-ingestor"))
        .args(["--once", "--source", "none"])
        .args(["--readings-source", readings.to_str().unwrap()])
        .args(["--influx-url", &influx.url()])
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(computed.success());
    assert_eq!(influx.count("aqi", "air_quality_5min", "P1").await, 576);
    assert_eq!(influx.count("aqi", "air_quality", "coverage").await, 2);
}

#[tokio::test]
async fn every_dashboard_query_returns_data_written_by_our_workloads() {
    let influx = InfluxServer::start().await;
    write_workload_data(&influx).await;

    // A location that has an AQI, as a person would pick it in the variable's drop-down.
    let rows = influx
        .rows(
            "aqi",
            "SELECT last(aqi) FROM air_quality GROUP BY location_id",
        )
        .await;
    assert!(!rows.is_empty());
    let answer = influx
        .query(
            "aqi",
            "SELECT last(aqi) FROM air_quality GROUP BY location_id",
        )
        .await;
    let location = answer["results"][0]["series"][0]["tags"]["location_id"]
        .as_str()
        .unwrap()
        .to_string();

    let aqi_dashboard = dashboards::load("aqi.json");
    // The reference's own link form selects the variables.
    let reference_link =
        format!("/d/iot-aqi/air-quality?orgId=1&var-measure_name=P1&var-location_id={location}");
    assert_eq!(
        link_variables(&aqi_dashboard, &reference_link),
        [
            ("measure_name".to_string(), "P1".to_string()),
            ("location_id".to_string(), location.clone())
        ]
    );

    // Two downsampling tiers as the InfluxDB setup makes them (kept for ever here: the AQI
    // sample is from 2019), filled by their backfill's query, and the dashboards' tier table.
    let tiers = [300, 3600].map(|every_seconds| Tier {
        every_seconds,
        keep: "INF".into(),
        keep_seconds: None,
    });
    let until = jiff::Timestamp::now().as_second() + 3600;
    for db in ["dht", "aqi"] {
        for tier in &tiers {
            let rp = tier.policy();
            influx
                .query(
                    db,
                    &format!(
                        "CREATE RETENTION POLICY \"{rp}\" ON \"{db}\" DURATION INF REPLICATION 1"
                    ),
                )
                .await;
            let (head, group) = influxdb_plan::downsample_select(db, tier);
            influx
                .query(
                    db,
                    &format!("{head} WHERE time >= 0s AND time < {until}s {group}"),
                )
                .await;
        }
        let meta = influxdb_plan::META_POLICY;
        influx
            .query(
                db,
                &format!(
                    "CREATE RETENTION POLICY \"{meta}\" ON \"{db}\" DURATION INF REPLICATION 1"
                ),
            )
            .await;
        let rows: Vec<String> = influxdb_plan::tier_table(None, &tiers)
            .iter()
            .map(|(from, rp)| format!("{} rp=\"{rp}\" {from}000000000", influxdb_plan::TIER_TABLE))
            .collect();
        influx.write_to(db, meta, &rows.join("\n")).await;
    }

    // The tier variable picks raw points for a day, the 5-minute tier for a week, the hourly
    // one for a year: as Grafana runs it when the time range changes.
    for (file, uid) in [("dht.json", "iot-dht"), ("aqi.json", "iot-aqi")] {
        let dashboard = dashboards::load(file);
        let (_, _, q) = queries(&dashboard)
            .into_iter()
            .find(|(title, _, _)| title == "variable \"tier\"")
            .expect("a tier variable");
        for (days, expected) in [(1, "autogen"), (7, "ds_5m"), (365, "ds_1h")] {
            let macros = Macros {
                time_filter: String::new(),
                interval: "1m",
                range_ms: (1_700_000_000_000, 1_700_000_000_000 + days * 86_400_000),
                vars: vec![],
            };
            let rows = influx.rows(database_of(uid), &macros.expand(&q)).await;
            assert_eq!(rows.len(), 1, "{file}: {days} d: {rows:?}");
            assert_eq!(rows[0][1], expected, "{file}: {days} days");
        }
    }

    let mut checked = 0;
    for tier in ["autogen", "ds_5m", "ds_1h"] {
        let with_tier = |mut vars: Vec<(String, String)>| {
            vars.push(("tier".to_string(), tier.to_string()));
            vars
        };
        let dht = Macros {
            // Two hours: the hourly tier's newest bucket may begin up to an hour ago.
            time_filter: "time >= now() - 2h".into(),
            interval: "10s",
            range_ms: (0, 2 * 3_600_000),
            vars: with_tier(vec![]),
        };
        // Two windows, each with a location that has data in it: the sample's day in 2019, and
        // the last two days (the computed means).
        let windows = [
            (
                "time >= '2019-04-15T00:00:00Z' AND time <= '2019-04-18T00:00:00Z'",
                location.clone(),
            ),
            (
                "time >= '2019-04-15T00:00:00Z' AND time <= '2019-04-18T00:00:00Z'",
                ".*".into(),
            ),
            ("time >= now() - 2d", "90001".to_string()),
            ("time >= now() - 2d", ".*".into()),
        ];
        for (file, measures) in [
            ("dht.json", vec![""]),
            ("aqi.json", vec!["P2", "P1", "aqi"]),
        ] {
            let dashboard = dashboards::load(file);
            for measure in measures {
                for (time_filter, location_value) in &windows {
                    let link =
                        format!("?var-measure_name={measure}&var-location_id={location_value}");
                    let aqi = Macros {
                        time_filter: time_filter.to_string(),
                        interval: "5m",
                        range_ms: (0, 3 * 86_400_000),
                        vars: with_tier(link_variables(&aqi_dashboard, &link)),
                    };
                    let macros = if file == "dht.json" { &dht } else { &aqi };
                    for (title, uid, q) in queries(&dashboard) {
                        let q = macros.expand(&q);
                        let answer = influx.query(database_of(&uid), &q).await;
                        assert!(
                            has_values(&answer),
                            "{file} / {title} ({tier}): no data for\n  {q}\n  {answer}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    // Per tier: the DHT dashboard's 2 charts and variable for 4 windows, the AQI dashboard's
    // 6 panels and 3 variables for 3 measures and 4 windows.
    assert!(
        checked >= 3 * (4 * 3 + 3 * 4 * 9),
        "only {checked} queries checked"
    );

    // The coverage and origin of each index: upstream means from the sample, computed ones with
    // their coverage (a full day: 1, with an index).
    let panel = |title: &str| {
        aqi_dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"))
            .clone()
    };
    let coverage = panel("Index coverage and origin");
    let q = Macros {
        time_filter: "time >= '2019-04-15T00:00:00Z' AND time <= now()".into(),
        interval: "1h",
        range_ms: (0, 86_400_000),
        vars: vec![("location_id".into(), ".*".into())],
    }
    .expand(coverage["targets"][0]["query"].as_str().unwrap());
    let answer = influx.query("aqi", &q).await;
    let mut origins = std::collections::BTreeMap::new();
    for series in answer["results"][0]["series"].as_array().unwrap() {
        let col = |name: &str| {
            series["columns"]
                .as_array()
                .unwrap()
                .iter()
                .position(|c| c == name)
                .unwrap()
        };
        let rows = series["values"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "the newest mean per sensor: {series}");
        let row = &rows[0];
        let origin = row[col("origin")].as_str().unwrap().to_string();
        if origin == "computed" {
            assert_eq!(row[col("coverage")], 1.0, "{series}");
            assert!(row[col("aqi")].as_i64().is_some(), "{series}");
        } else {
            assert!(row[col("coverage")].is_null(), "{series}");
        }
        *origins.entry(origin).or_insert(0) += 1;
    }
    assert_eq!(origins.get("computed"), Some(&2), "{origins:?}");
    assert!(
        origins.get("upstream").is_some_and(|&n| n > 0),
        "{origins:?}"
    );

    // The IoT Data table shows both, and links to Grafana's CSV download of itself.
    let iot = panel("IoT Data");
    let query = iot["targets"][0]["query"].as_str().unwrap();
    assert!(query.contains("\"coverage\", \"origin\""), "{query}");
    let csv = iot["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["title"] == "Download CSV")
        .expect("a Download CSV link");
    let url = csv["url"].as_str().unwrap();
    assert!(
        url.contains(&format!("inspect={}&inspectTab=data", iot["id"]))
            && url.contains("${measure_name:queryparam}")
            && url.contains("${location_id:queryparam}")
            && url.contains("${__url_time_range}"),
        "{url}"
    );
}
