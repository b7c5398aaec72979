//! Every InfluxQL query of the shipped Grafana dashboards runs against a real InfluxDB holding
//! data our own workloads wrote (sensor-sim → coap-server, aqi-ingestor from real
//! Sensor.Community records) and must return data: a dashboard cannot fail silently.

// Test helpers may unwrap: a failure here is a test failure with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use iot_testkit::bins::workspace_bin;
use iot_testkit::influx::InfluxServer;
use iot_testkit::ports::{free_tcp_addr, free_udp_addr};
use iot_testkit::process::Service;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Datasource uid of the dashboards → the database the operator's datasource points at.
fn database_of(uid: &str) -> &'static str {
    match uid {
        "iot-dht" => "dht",
        "iot-aqi" => "aqi",
        other => panic!("a dashboard uses an unknown datasource uid {other:?}"),
    }
}

/// What Grafana substitutes before a query reaches InfluxDB.
struct Macros {
    time_filter: String,
    interval: &'static str,
    vars: Vec<(&'static str, String)>,
}

impl Macros {
    fn expand(&self, q: &str) -> String {
        let mut q = q
            .replace("$timeFilter", &self.time_filter)
            .replace("$__interval", self.interval);
        for (name, value) in &self.vars {
            q = q.replace(&format!("${name}"), value);
        }
        let unexpanded = q
            .match_indices('$')
            .any(|(i, _)| q[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'));
        assert!(!unexpanded, "unexpanded macro in {q}");
        q
    }
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
}

/// (panel or variable title, datasource uid, raw query) of every query in a dashboard.
fn queries(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let uid_of = |v: &Value| v["datasource"]["uid"].as_str().map(str::to_string);
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for t in panel["targets"].as_array().into_iter().flatten() {
            let uid = uid_of(t)
                .or_else(|| uid_of(panel))
                .expect("panel datasource uid");
            assert_eq!(
                t["rawQuery"], true,
                "panel {title}: queries are raw InfluxQL"
            );
            out.push((title.clone(), uid, t["query"].as_str().unwrap().to_string()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .expect("variable query");
            out.push((
                format!("variable {}", v["name"]),
                uid_of(v).expect("variable datasource uid"),
                q.to_string(),
            ));
        }
    }
    out
}

fn has_values(answer: &Value) -> bool {
    answer["results"][0]["series"]
        .as_array()
        .is_some_and(|series| {
            series.iter().any(|s| {
                s["values"].as_array().is_some_and(|rows| {
                    rows.iter().any(|r| {
                        r.as_array()
                            .is_some_and(|c| c.iter().skip(1).any(|x| !x.is_null()))
                    })
                })
            })
        })
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

    let dht = Macros {
        time_filter: "time >= now() - 30m".into(),
        interval: "10s",
        vars: vec![],
    };
    let mut checked = 0;
    for (file, measures) in [
        ("dht.json", vec![""]),
        ("aqi.json", vec!["P2", "P1", "aqi"]),
    ] {
        let path = repo().join("operator/dashboards").join(file);
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for measure in measures {
            for location_value in [location.clone(), ".*".to_string()] {
                let aqi = Macros {
                    // The sample records are from 2019-04-16 (UTC).
                    time_filter:
                        "time >= '2019-04-15T00:00:00Z' AND time <= '2019-04-18T00:00:00Z'".into(),
                    interval: "5m",
                    vars: vec![
                        ("measure", measure.to_string()),
                        ("location", location_value),
                    ],
                };
                let macros = if file == "dht.json" { &dht } else { &aqi };
                for (title, uid, q) in queries(&dashboard) {
                    let q = macros.expand(&q);
                    let answer = influx.query(database_of(&uid), &q).await;
                    assert!(
                        has_values(&answer),
                        "{file} / {title}: no data for\n  {q}\n  {answer}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 2 * 2 + 3 * 2 * 7,
        "only {checked} queries checked"
    );
}
