//! Every built-in Grafana alert rule, exactly as the operator provisions it, evaluated against a
//! real InfluxDB holding fixture data: data that must fire makes it fire for the right sensor
//! or location, data that must not does not, and both are counted per rule.
//!
//! Grafana cannot run here, so the test evaluates a rule as Grafana does: it runs the rule's
//! InfluxQL query (`A`) in the database of the datasource the rule names, reduces each series
//! to its last value (`B`, the rule's reducer) and applies the rule's threshold (`C`); no series
//! at all is the rule's `noDataState`. IngestFailing is evaluated on what a real coap-server
//! reports of its own answers.

// Test helpers may unwrap: a failure here is a test failure with its location.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

use coap_lite::{MessageClass, ResponseType};
use iot_testkit::bins::workspace_bin;
use iot_testkit::coap::{RawClient, temperature_reading};
use iot_testkit::ports::free_udp_addr;
use iot_testkit::process::Service;
use iot_testkit::wait;

use iot_operator::controller::dereference::Dereferenced;
use iot_operator::controller::desired::alerts::rules;
use iot_operator::controller::validate::{ValidatedMonitor, validate};
use iot_operator::crd::IotMonitor;
use iot_testkit::influx::InfluxServer;
use serde_json::Value;

fn model(spec: &str) -> ValidatedMonitor {
    let mut monitor = IotMonitor::new("lab", serde_yaml::from_str(spec).unwrap());
    monitor.metadata.namespace = Some("iot".into());
    monitor.metadata.uid = Some("uid".into());
    validate(&monitor, &Dereferenced::default()).unwrap()
}

/// Seconds since the epoch, now.
fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

async fn write(influx: &InfluxServer, db: &str, lines: &[String]) {
    let http = reqwest::Client::new();
    influx.query(db, &format!("CREATE DATABASE \"{db}\"")).await;
    let resp = http
        .post(format!("{}/write", influx.url()))
        .query(&[("db", db), ("precision", "s")])
        .body(lines.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        204,
        "{}",
        resp.text().await.unwrap()
    );
}

/// Readings of one sensor every minute from `from` to `to` minutes ago, `value(i)` the i-th.
fn readings(
    measurement: &str,
    place: &str,
    sensor: &str,
    (from, to): (i64, i64),
    value: impl Fn(i64) -> f64,
) -> Vec<String> {
    let now = now();
    (to..=from)
        .rev()
        .enumerate()
        .map(|(i, ago)| {
            let v = value(i as i64);
            format!(
                "{measurement},place={place},sensor={sensor} value={v:.1} {}",
                now - ago * 60
            )
        })
        .collect()
}

/// The DHT fixture: for each measurement one sensor of each kind.
fn dht_fixture() -> Vec<String> {
    let mut lines = Vec::new();
    for (m, base, edge) in [("temperature", 21.0, 80.0), ("humidity", 45.0, 100.0)] {
        let varying = move |i: i64| base + (i % 5) as f64 * 0.1;
        // Fine: every minute for 40 minutes, varying, in range.
        lines.extend(readings(m, "lab", "ok-1", (40, 0), varying));
        // Silent for 20 minutes, registered.
        lines.extend(readings(m, "hall", "silent-1", (60, 20), varying));
        // Silent for 20 minutes, not a registered device.
        lines.extend(readings(m, "hall", "stranger", (60, 20), varying));
        // The same value for 40 minutes.
        lines.extend(readings(m, "lab", "stuck-1", (40, 0), |_| base));
        // At the edge of the DHT22's range now (80 °C, 100 %RH).
        lines.extend(readings(m, "roof", "edge-1", (40, 0), move |i| {
            if i == 40 { edge } else { varying(i) }
        }));
        // Just inside the range now (79.9 °C, 99.9 %RH).
        lines.extend(readings(m, "roof", "inside-1", (40, 0), move |i| {
            if i == 40 { edge - 0.1 } else { varying(i) }
        }));
        // Last heard of two days ago: no longer a sensor anyone waits for.
        lines.extend(readings(
            m,
            "attic",
            "gone-1",
            (2 * 24 * 60, 2 * 24 * 60 - 5),
            varying,
        ));
    }
    lines
}

/// The AQI fixture: locations with their sensors' 24-hour indices.
fn aqi_fixture() -> Vec<String> {
    let now = now();
    let point = |sensor: u32, location: u32, aqi: u32, ago_s: i64| {
        format!(
            "air_quality,sensor_id={sensor},location_id={location},country=GB aqi={aqi}i,P1=10.0 {}",
            now - ago_s
        )
    };
    vec![
        // Location 10: one of its sensors is in band 8.
        point(1, 10, 8, 1800),
        point(2, 10, 3, 600),
        // Location 11: was 9, now 2 (the latest counts).
        point(3, 11, 9, 7200),
        point(3, 11, 2, 600),
        // Location 12: exactly band 7.
        point(4, 12, 7, 900),
        // Location 13: band 6.
        point(5, 13, 6, 900),
    ]
}

/// What one rule evaluation gives: firing instances (their labels) and quiet ones.
#[derive(Debug, Default)]
struct Outcome {
    firing: Vec<String>,
    quiet: Vec<String>,
}

fn data<'a>(rule: &'a Value, ref_id: &str) -> &'a Value {
    rule["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["refId"] == ref_id)
        .unwrap_or_else(|| panic!("{} has no {ref_id}", rule["uid"]))
}

/// Grafana's threshold evaluators.
fn threshold(evaluator: &Value, x: f64) -> bool {
    let p = |i: usize| evaluator["params"][i].as_f64().unwrap();
    match evaluator["type"].as_str().unwrap() {
        "gt" => x > p(0),
        "lt" => x < p(0),
        "outside_range" => x < p(0) || x > p(1),
        "within_range" => x > p(0) && x < p(1),
        other => panic!("evaluator {other} not covered"),
    }
}

/// Evaluates `rule` as Grafana would, its datasources' databases given by `databases`.
async fn evaluate(
    influx: &InfluxServer,
    rule: &Value,
    databases: &BTreeMap<&str, &str>,
) -> Outcome {
    let a = data(rule, "A");
    let db = databases[a["datasourceUid"].as_str().unwrap()];
    let b = data(rule, "B");
    assert_eq!(b["model"]["type"], "reduce");
    assert_eq!(b["model"]["expression"], "A");
    assert_eq!(b["model"]["reducer"], "last");
    let c = data(rule, "C");
    assert_eq!(rule["condition"], "C");
    assert_eq!(c["model"]["type"], "threshold");
    assert_eq!(c["model"]["expression"], "B");
    let evaluator = &c["model"]["conditions"][0]["evaluator"];

    let answer = influx
        .query(db, a["model"]["query"].as_str().unwrap())
        .await;
    let series = answer
        .pointer("/results/0/series")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut outcome = Outcome::default();
    if series.is_empty() {
        if rule["noDataState"] == "Alerting" {
            outcome.firing.push("(no data)".into());
        }
        return outcome;
    }
    for s in series {
        let labels: Vec<String> = s["tags"]
            .as_object()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        let last = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find_map(|row| row.as_array().unwrap().last().unwrap().as_f64())
            .unwrap();
        let labels = labels.join(",");
        if threshold(evaluator, last) {
            outcome.firing.push(format!("{labels} ({last})"));
        } else {
            outcome.quiet.push(format!("{labels} ({last})"));
        }
    }
    outcome
}

fn rule<'a>(doc: &'a Value, uid: &str) -> &'a Value {
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .find(|r| r["uid"] == uid)
        .unwrap_or_else(|| panic!("no rule {uid}"))
}

/// The firing instances' labels without the value, sorted.
fn who(outcome: &Outcome) -> Vec<String> {
    let mut w: Vec<String> = outcome
        .firing
        .iter()
        .map(|f| f.split(" (").next().unwrap().to_owned())
        .collect();
    w.sort();
    w
}

/// A rule on a whole data set (no sensor or location) gives one instance: firing or quiet.
fn assert_one_instance(outcome: &Outcome, fires: bool, db: &str) {
    assert_eq!(
        outcome.firing.len(),
        usize::from(fires),
        "{db}: {outcome:?}"
    );
    assert_eq!(
        outcome.quiet.len(),
        usize::from(!fires),
        "{db}: {outcome:?}"
    );
}

#[tokio::test]
async fn every_built_in_rule_fires_for_its_fixture_and_only_for_it() {
    let influx = InfluxServer::start().await;
    write(&influx, "dht", &dht_fixture()).await;
    write(&influx, "aqi", &aqi_fixture()).await;
    // A data set whose newest point is two hours old, and an empty one.
    write(
        &influx,
        "aqi_stale",
        &[format!(
            "air_quality,sensor_id=1,location_id=10,country=GB aqi=2i {}",
            now() - 7200
        )],
    )
    .await;
    influx.query("aqi_empty", "CREATE DATABASE aqi_empty").await;

    // The simulator off and no devices: every sensor seen is watched.
    let all = model("simulator: {enabled: false}");
    let doc = rules::document(&all);
    let dbs = BTreeMap::from([("iot-dht", "dht"), ("iot-aqi", "aqi")]);

    // rule → (firing, number quiet)
    let expected: [(&str, &[&str], usize); 7] = [
        (
            "iot-sensor-silent-temperature",
            &["place=hall,sensor=silent-1", "place=hall,sensor=stranger"],
            4,
        ),
        (
            "iot-sensor-silent-humidity",
            &["place=hall,sensor=silent-1", "place=hall,sensor=stranger"],
            4,
        ),
        // silent-1 and stranger have their last 10 readings in the window, varying.
        (
            "iot-sensor-stuck-temperature",
            &["place=lab,sensor=stuck-1"],
            5,
        ),
        (
            "iot-sensor-stuck-humidity",
            &["place=lab,sensor=stuck-1"],
            5,
        ),
        // Only sensors with a reading in the last 10 minutes have a value to judge.
        (
            "iot-sensor-out-of-range-temperature",
            &["place=roof,sensor=edge-1"],
            3,
        ),
        (
            "iot-sensor-out-of-range-humidity",
            &["place=roof,sensor=edge-1"],
            3,
        ),
        (
            "iot-air-quality-high",
            &["country=GB,location_id=10", "country=GB,location_id=12"],
            2,
        ),
    ];
    let mut report = Vec::new();
    for (uid, firing, quiet) in expected {
        let outcome = evaluate(&influx, rule(&doc, uid), &dbs).await;
        report.push(format!(
            "{uid}: {} firing {:?}, {} quiet",
            outcome.firing.len(),
            outcome.firing,
            outcome.quiet.len()
        ));
        assert_eq!(who(&outcome), firing, "{uid} fired for {outcome:?}");
        assert_eq!(outcome.quiet.len(), quiet, "{uid} quiet: {outcome:?}");
    }
    // The location's value is its worst sensor's.
    let high = evaluate(&influx, rule(&doc, "iot-air-quality-high"), &dbs).await;
    assert!(
        high.firing
            .contains(&"country=GB,location_id=10 (8)".to_owned()),
        "{high:?}"
    );

    // AqiIngestorStale: fresh data is quiet, two-hour-old data and no data fire.
    let stale = rule(&doc, "iot-aqi-ingestor-stale");
    for (db, fires) in [("aqi", false), ("aqi_stale", true), ("aqi_empty", true)] {
        let dbs = BTreeMap::from([("iot-aqi", db)]);
        let outcome = evaluate(&influx, stale, &dbs).await;
        report.push(format!("iot-aqi-ingestor-stale on {db}: {outcome:?}"));
        assert_one_instance(&outcome, fires, db);
    }

    // SensorStuck's summary value (`E` from `D`) is the stuck reading.
    let stuck = rule(&doc, "iot-sensor-stuck-temperature");
    let d = data(stuck, "D")["model"]["query"].as_str().unwrap();
    let rows = influx.rows("dht", d).await;
    assert!(rows.iter().any(|r| r[1] == 21.0), "{rows:?}");
    println!("{}", report.join("\n"));
}

#[tokio::test]
async fn with_registered_devices_only_they_are_watched() {
    let influx = InfluxServer::start().await;
    write(&influx, "dht", &dht_fixture()).await;
    let devices: Vec<String> = [
        "ok-1", "silent-1", "stuck-1", "edge-1", "inside-1", "gone-1",
    ]
    .iter()
    .map(|d| format!("{{name: {d}, place: lab}}"))
    .collect();
    let registered = model(&format!(
        "simulator: {{enabled: false}}\ncoap: {{devices: [{}]}}",
        devices.join(", ")
    ));
    let doc = rules::document(&registered);
    let dbs = BTreeMap::from([("iot-dht", "dht"), ("iot-aqi", "aqi")]);
    let outcome = evaluate(&influx, rule(&doc, "iot-sensor-silent-temperature"), &dbs).await;
    // `stranger` is as silent as silent-1 but no device: not watched.
    assert_eq!(who(&outcome), ["place=hall,sensor=silent-1"], "{outcome:?}");
    assert_eq!(outcome.quiet.len(), 4, "{outcome:?}");
}

/// coap-server on a free loopback port, writing to `db` and reporting its answers every second.
async fn coap_server(influx: &InfluxServer, db: &str) -> (Service, std::net::SocketAddr) {
    let mut coap = free_udp_addr();
    let url = influx.url();
    let service = Service::start("coap-server", "/readyz", |http| {
        coap = free_udp_addr();
        let mut c = Command::new(workspace_bin("coap-server"));
        c.args([
            "--bind",
            &coap.to_string(),
            "--http-addr",
            &http.to_string(),
        ])
        .args(["--influx-url", &url, "--influx-db", db])
        .args(["--answer-report-seconds", "1"]);
        c
    })
    .await;
    (service, coap)
}

/// The sums of coap-server's reports in `db`: datagrams, refused, unavailable.
async fn reported(influx: &InfluxServer, db: &str) -> (i64, i64, i64) {
    let rows = influx
        .rows(
            db,
            r#"SELECT sum("datagrams"), sum("refused"), sum("unavailable") FROM "coap_server""#,
        )
        .await;
    let n = |i: usize| rows.first().and_then(|r| r[i].as_i64()).unwrap_or(0);
    (n(1), n(2), n(3))
}

#[tokio::test]
async fn ingest_failing_fires_on_what_coap_server_reports() {
    let influx = InfluxServer::start().await;
    let doc = rules::document(&model("simulator: {enabled: false}"));
    let ingest = rule(&doc, "iot-ingest-failing");
    let mut report = Vec::new();
    // (database, good readings, refused ones, fires): 1 in 50 refused is 2 %, 10 in 50 is
    // 20 %; the default threshold is 5 %.
    for (db, good, bad, fires) in [("ingest_ok", 49, 1, false), ("ingest_bad", 40, 10, true)] {
        let (mut server, coap) = coap_server(&influx, db).await;
        let client = RawClient::new(coap);
        let mut stored = 0;
        for mid in 0..good + bad {
            // Not a number: refused with 4.00, nothing stored.
            let value = if mid < bad { "warm" } else { "21.5" };
            client.send(&temperature_reading(mid, &["place=lab"], value));
            let answer = client.recv();
            if answer.header.code == MessageClass::Response(ResponseType::Changed) {
                stored += 1;
            }
        }
        assert_eq!(stored, good, "{db}: every good reading stored");
        let total = i64::from(good + bad);
        let what = format!("coap-server's reports in {db} to count {total} datagrams");
        let counts = wait::until(&what, wait::default_timeout(), || async {
            match reported(&influx, db).await {
                c if c.0 == total => Ok(c),
                c => Err(format!("{c:?}")),
            }
        })
        .await
        .unwrap();
        assert_eq!(counts, (total, i64::from(bad), 0), "{db}");

        let outcome = evaluate(&influx, ingest, &BTreeMap::from([("iot-dht", db)])).await;
        report.push(format!("iot-ingest-failing on {db}: {outcome:?}"));
        assert_one_instance(&outcome, fires, db);
        server.process.stop().await;
    }
    // Reports of a server that received nothing: 0 %, quiet (InfluxQL divides by zero as 0).
    write(
        &influx,
        "ingest_idle",
        &[format!(
            "coap_server,pod=a datagrams=0i,refused=0i,unavailable=0i {}",
            now() - 30
        )],
    )
    .await;
    let idle = evaluate(
        &influx,
        ingest,
        &BTreeMap::from([("iot-dht", "ingest_idle")]),
    )
    .await;
    assert!(idle.firing.is_empty(), "{idle:?}");
    // No report at all (no coap-server): no data, which the rule leaves quiet.
    influx
        .query("ingest_none", "CREATE DATABASE ingest_none")
        .await;
    let none = evaluate(
        &influx,
        ingest,
        &BTreeMap::from([("iot-dht", "ingest_none")]),
    )
    .await;
    assert!(none.firing.is_empty(), "{none:?}");
    println!("{}", report.join("\n"));
}
