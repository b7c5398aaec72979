//! The shipped dashboards: the panels, queries and colours the seed had.

use serde_json::Value;

use crate::controller::desired::grafana::{AQI_DASHBOARD, DHT_DASHBOARD, dashboard};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("dashboard is JSON")
}

fn queries(dashboard: &Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["query"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn dht_dashboard_plots_each_place_over_time() {
    let d = parse(DHT_DASHBOARD);
    let qs = queries(&d);
    assert_eq!(qs.len(), 2);
    for (q, m) in qs.iter().zip(["temperature", "humidity"]) {
        // The raw field, or its mean in a downsampling tier (`mean_value`).
        assert!(q.starts_with("SELECT mean(/^(mean_)?value$/)"), "{q}");
        assert!(q.contains(&format!("FROM \"$tier\".\"{m}\"")), "{q}");
        assert!(
            q.contains("GROUP BY time($__interval), \"place\" fill(previous)"),
            "{q}"
        );
    }
    assert_eq!(d["panels"][0]["datasource"]["uid"], "iot-dht");
}

#[test]
fn aqi_dashboard_has_the_seed_panels_and_variables() {
    let d = parse(AQI_DASHBOARD);
    let titles: Vec<_> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        titles,
        [
            "Measure Value Evolution",
            "Max AQI",
            "Mean AQI",
            "AQI Map",
            "Index coverage and origin",
            "IoT Data"
        ]
    );
    let vars: Vec<_> = d["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    // The reference's names, so that its links (?var-measure_name=P1&var-location_id=…) work.
    assert_eq!(vars, ["measure_name", "location_id", "tier"]);
    assert_eq!(d["panels"][3]["type"], "geomap");
}

#[test]
fn aqi_map_colours_by_daqi_band() {
    let d = parse(AQI_DASHBOARD);
    let steps = &d["panels"][3]["fieldConfig"]["defaults"]["thresholds"]["steps"];
    let bands: Vec<_> = steps
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["color"].as_str().unwrap_or_default().to_owned(),
                s["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        bands,
        [
            ("green".to_owned(), Value::Null),
            ("orange".to_owned(), 4.into()),
            ("red".to_owned(), 7.into()),
            ("purple".to_owned(), 10.into()),
        ]
    );
    let layer = &d["panels"][3]["options"]["layers"][0];
    assert_eq!(layer["config"]["style"]["color"]["field"], "aqi");
}

#[test]
fn every_panel_uses_a_provisioned_datasource() {
    for text in [DHT_DASHBOARD, AQI_DASHBOARD] {
        let d = parse(text);
        for p in d["panels"].as_array().expect("panels") {
            let uid = p["datasource"]["uid"].as_str().unwrap_or_default();
            assert!(["iot-dht", "iot-aqi"].contains(&uid), "{}", p["title"]);
        }
    }
}

#[test]
fn charts_read_the_tier_of_the_time_range_and_an_external_influxdb_its_default_policy() {
    for text in [DHT_DASHBOARD, AQI_DASHBOARD] {
        let d = parse(text);
        let tier = d["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .find(|v| v["name"] == "tier")
            .expect("a tier variable");
        // Grafana runs it again whenever the time range changes.
        assert_eq!(tier["refresh"], 2);
        let q = tier["query"].as_str().expect("query");
        assert!(q.contains("${__to}ms - ${__from}ms"), "{q}");
        let external = parse(&dashboard(text, false));
        let vars = external["templating"]["list"]
            .as_array()
            .expect("variables");
        assert!(vars.iter().all(|v| v["name"] != "tier"));
        for q in queries(&external) {
            assert!(!q.contains("$tier"), "{q}");
        }
        assert_eq!(dashboard(text, true), text);
    }
}
