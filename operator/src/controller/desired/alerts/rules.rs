//! The built-in rules Grafana evaluates on InfluxDB, as file-provisioned rule groups.
//!
//! Every rule is one InfluxQL query (`A`) that returns one series per sensor (`place`,
//! `sensor`) or per location (`location_id`, `country`), reduced to its last value (`B`) and
//! compared with the spec's threshold (`C`, the condition). So a firing alert's labels name the
//! sensor or location and `$values.B` is the value, and the end-to-end test can evaluate the
//! very same rule against a real InfluxDB. The queries carry their own time range (`now() -
//! …`) instead of Grafana's `$timeFilter`: Grafana expands `$NAME` in provisioned queries from
//! its environment, and a query without macros is exactly what InfluxDB runs.
//!
//! IngestFailing reads what coap-server reports of its own answers every minute (measurement
//! `coap_server`), so Grafana alerts on refusals and 5.03 answers without Prometheus; the
//! Prometheus path has the same rule on the same totals (`crate::controller::desired::prometheus`).

use serde_json::{Value, json};

use crate::constants::{AQI_DATASOURCE_UID, DHT_DATASOURCE_UID};
use crate::controller::validate::{Alerts, EXPRESSION_UID, ValidatedMonitor};

/// The folder of the rules, beside the dashboards'.
pub const FOLDER: &str = "IoT";
/// How often Grafana evaluates the groups.
pub const INTERVAL: &str = "1m";
/// A sensor counts as known while it has sent something within this long (plus `silentAfter`).
const SEEN_WITHIN_SECONDS: u64 = 86_400;
/// The DAQI is a 24-hour mean, written every few minutes: a location's current index is its
/// sensors' last within a day.
const AQI_LOOKBACK_SECONDS: u64 = 86_400;
/// Registered devices are named in the queries up to this many; beyond it the regular
/// expression would outgrow the ConfigMap, and every sensor seen is watched instead.
pub const MAX_NAMED_DEVICES: usize = 500;
/// IngestFailing's window, as the Prometheus rule's `rate(...[5m])`.
const INGEST_WINDOW_SECONDS: u64 = 300;
/// Half the DHT22's resolution (0.1): "at the edge" means within it of the bound.
const EDGE: f64 = 0.05;

/// One built-in rule: what the provisioning file says about it, in the operator's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltIn {
    /// Begins with `iot-` (the users' uids may not).
    pub uid: String,
    /// The rule's name in docs/alerts.md (`SensorSilent`), its `rule` label.
    pub rule: &'static str,
    pub title: String,
    pub datasource: &'static str,
    /// `A`: one series per sensor or location.
    pub query: String,
    /// How far back `A` looks, in seconds (the query's relativeTimeRange).
    pub lookback_seconds: u64,
    /// `C`: Grafana's threshold evaluator applied to the last value of each series.
    pub evaluator: (&'static str, Vec<f64>),
    pub no_data: &'static str,
    pub summary: String,
    pub description: &'static str,
    /// `D`, reduced to `E`: a second value for the summary (SensorStuck's reading).
    pub value_query: Option<String>,
    pub labels: Vec<(&'static str, String)>,
}

/// The rule groups and their rules: sensors always, air quality with the ingestor.
pub fn built_in(model: &ValidatedMonitor) -> Vec<(&'static str, Vec<BuiltIn>)> {
    let Some(alerts) = &model.alerts else {
        return Vec::new();
    };
    let filter = device_filter(model);
    let mut sensors = Vec::new();
    for (measurement, unit, (min, max)) in [
        ("temperature", "°C", alerts.temperature),
        ("humidity", "%RH", alerts.humidity),
    ] {
        sensors.push(silent(alerts, measurement, &filter));
        sensors.push(stuck(alerts, measurement, unit, &filter));
        sensors.push(out_of_range(alerts, measurement, unit, (min, max), &filter));
    }
    let mut groups = vec![
        ("iot-sensors", sensors),
        ("iot-ingest", vec![ingest_failing(alerts)]),
    ];
    if model.aqi.is_some() {
        groups.push((
            "iot-air-quality",
            vec![air_quality_high(alerts), aqi_ingestor_stale(alerts)],
        ));
    }
    groups
}

/// `AND "sensor" =~ /^(a|b)\z/` naming the registered devices, or nothing: without devices
/// (plain CoAP only) every place/sensor pair seen is watched. `\z` (end of text in Go's
/// regular expressions, which InfluxDB uses) rather than `$`: Grafana expands `$NAME` in
/// provisioned queries, and a query without `$` cannot be touched by it.
fn device_filter(model: &ValidatedMonitor) -> String {
    let names: Vec<&str> = model.devices().map(|d| d.name.as_str()).collect();
    if names.is_empty() || names.len() > MAX_NAMED_DEVICES {
        return String::new();
    }
    // Device names are DNS labels: nothing in them is special in a regular expression but
    // `-`, which is literal outside brackets.
    format!(r#" AND "sensor" =~ /^({})\z/"#, names.join("|"))
}

const BY_SENSOR: &str = r#"GROUP BY "place","sensor""#;

fn sensor_labels(rule: &'static str, measurement: &str) -> Vec<(&'static str, String)> {
    vec![
        ("rule", rule.to_owned()),
        ("measurement", measurement.to_owned()),
        ("severity", "warning".to_owned()),
    ]
}

fn silent(alerts: &Alerts, measurement: &str, filter: &str) -> BuiltIn {
    let window = alerts.silent_after.seconds;
    let lookback = SEEN_WITHIN_SECONDS + window;
    // Two subqueries merged: every sensor seen within the lookback contributes 0, the readings
    // of the last `window` their count; the largest per sensor is 0 for a silent one. A sensor
    // with no reading at all would otherwise be no series, which no threshold can catch.
    let query = format!(
        r#"SELECT max("recent") AS "recent" FROM (SELECT count("value") * 0 AS "recent" FROM "{measurement}" WHERE time > now() - {lookback}s{filter} {BY_SENSOR}), (SELECT count("value") AS "recent" FROM "{measurement}" WHERE time > now() - {window}s{filter} {BY_SENSOR}) WHERE time > now() - {lookback}s {BY_SENSOR}"#
    );
    BuiltIn {
        uid: format!("iot-sensor-silent-{measurement}"),
        rule: "SensorSilent",
        title: format!("SensorSilent {measurement}"),
        datasource: DHT_DATASOURCE_UID,
        query,
        lookback_seconds: lookback,
        evaluator: ("lt", vec![1.0]),
        no_data: "OK",
        summary: format!(
            "Sensor {{{{ $labels.sensor }}}} at {{{{ $labels.place }}}} has sent no {measurement} for {} ({{{{ $values.B.Value }}}} readings)",
            alerts.silent_after.text
        ),
        description: "Check the device's power and network, and its key (coap_dtls_* metrics of coap-server); see docs/alerts.md#sensorsilent.",
        value_query: None,
        labels: sensor_labels("SensorSilent", measurement),
    }
}

fn stuck(alerts: &Alerts, measurement: &str, unit: &str, filter: &str) -> BuiltIn {
    let window = alerts.stuck_after.seconds;
    // The spread of the window's readings, for sensors with at least two of them.
    let query = format!(
        r#"SELECT "spread" FROM (SELECT spread("value") AS "spread", count("value") AS "n" FROM "{measurement}" WHERE time > now() - {window}s{filter} {BY_SENSOR}) WHERE "n" >= 2 {BY_SENSOR}"#
    );
    BuiltIn {
        uid: format!("iot-sensor-stuck-{measurement}"),
        rule: "SensorStuck",
        title: format!("SensorStuck {measurement}"),
        datasource: DHT_DATASOURCE_UID,
        query,
        lookback_seconds: window,
        // Readings have one decimal: any change is at least 0.1.
        evaluator: ("lt", vec![EDGE]),
        no_data: "OK",
        summary: format!(
            "Sensor {{{{ $labels.sensor }}}} at {{{{ $labels.place }}}} has reported {measurement} {{{{ $values.E.Value }}}} {unit} and nothing else for {}",
            alerts.stuck_after.text
        ),
        description: "A DHT22 that repeats one value has usually lost its sensing element or its bus; power-cycle it, then replace it; see docs/alerts.md#sensorstuck.",
        value_query: Some(format!(
            r#"SELECT last("value") FROM "{measurement}" WHERE time > now() - {window}s{filter} {BY_SENSOR}"#
        )),
        labels: sensor_labels("SensorStuck", measurement),
    }
}

fn out_of_range(
    alerts: &Alerts,
    measurement: &str,
    unit: &str,
    (min, max): (f64, f64),
    filter: &str,
) -> BuiltIn {
    let window = alerts.silent_after.seconds;
    BuiltIn {
        uid: format!("iot-sensor-out-of-range-{measurement}"),
        rule: "SensorOutOfRange",
        title: format!("SensorOutOfRange {measurement}"),
        datasource: DHT_DATASOURCE_UID,
        query: format!(
            r#"SELECT last("value") FROM "{measurement}" WHERE time > now() - {window}s{filter} {BY_SENSOR}"#
        ),
        lookback_seconds: window,
        // Grafana's outside_range is strict: bounds moved in by half the resolution make a
        // reading at the edge itself fire.
        evaluator: ("outside_range", vec![min + EDGE, max - EDGE]),
        no_data: "OK",
        summary: format!(
            "Sensor {{{{ $labels.sensor }}}} at {{{{ $labels.place }}}} reports {measurement} {{{{ $values.B.Value }}}} {unit}, at or beyond what it can measure ({min} to {max} {unit})"
        ),
        description: "A DHT22 at the edge of its range is usually broken or badly wired (a loose data line reads as extremes); check it; see docs/alerts.md#sensoroutofrange.",
        value_query: None,
        labels: sensor_labels("SensorOutOfRange", measurement),
    }
}

fn ingest_failing(alerts: &Alerts) -> BuiltIn {
    let window = INGEST_WINDOW_SECONDS;
    // Every pod's reports of the window together; no datagram at all is 0 % (InfluxQL divides
    // by zero as 0), and no report at all is no data: InfluxDB down shows as the rule's error.
    let query = format!(
        r#"SELECT (sum("refused") + sum("unavailable")) * 100 / sum("datagrams") AS "percent" FROM "coap_server" WHERE time > now() - {window}s"#
    );
    let threshold = alerts.ingest_failure_percent;
    BuiltIn {
        uid: "iot-ingest-failing".into(),
        rule: "IngestFailing",
        title: "IngestFailing".into(),
        datasource: DHT_DATASOURCE_UID,
        query,
        lookback_seconds: window,
        evaluator: ("gt", vec![f64::from(threshold)]),
        no_data: "OK",
        summary: format!(
            "{{{{ $values.B.Value }}}} % of what the CoAP server received in the last 5 minutes was refused or answered 5.03 (threshold {threshold} %)"
        ),
        description: "5.03 means InfluxDB does not take writes; refusals are bad requests or anonymous senders past their allowance: see coap-server's coap_requests_rejected_total{reason} and coap_readings_unavailable_total{reason}, and docs/alerts.md#ingestfailing.",
        value_query: None,
        labels: vec![
            ("rule", "IngestFailing".to_owned()),
            ("severity", "warning".to_owned()),
        ],
    }
}

fn air_quality_high(alerts: &Alerts) -> BuiltIn {
    let lookback = AQI_LOOKBACK_SECONDS;
    let by = r#"GROUP BY "location_id","country""#;
    // A location's index is the highest of its sensors' latest.
    let query = format!(
        r#"SELECT max("aqi") AS "aqi" FROM (SELECT last("aqi") AS "aqi" FROM "air_quality" WHERE time > now() - {lookback}s GROUP BY "sensor_id","location_id","country") WHERE time > now() - {lookback}s {by}"#
    );
    let band = alerts.aqi_band;
    BuiltIn {
        uid: "iot-air-quality-high".into(),
        rule: "AirQualityHigh",
        title: "AirQualityHigh".into(),
        datasource: AQI_DATASOURCE_UID,
        query,
        lookback_seconds: lookback,
        // The index is a whole number: above band - 0.5 is at or above the band.
        evaluator: ("gt", vec![f64::from(band) - 0.5]),
        no_data: "OK",
        summary: format!(
            "Location {{{{ $labels.location_id }}}} ({{{{ $labels.country }}}}): Daily Air Quality Index {{{{ $values.B.Value }}}}, at or above band {band}"
        ),
        description: "Follow the DAQI's health advice for the band (reduce strenuous activity outdoors); see docs/alerts.md#airqualityhigh.",
        value_query: None,
        labels: vec![
            ("rule", "AirQualityHigh".to_owned()),
            ("severity", "warning".to_owned()),
        ],
    }
}

fn aqi_ingestor_stale(alerts: &Alerts) -> BuiltIn {
    let window = alerts.aqi_stale_after.seconds;
    let lookback = AQI_LOOKBACK_SECONDS + window;
    // As SensorSilent, for the whole data set: 0 when points exist in the lookback but none
    // in the window; no data at all (nothing for a day) fires too (noDataState Alerting).
    let query = format!(
        r#"SELECT max("recent") AS "recent" FROM (SELECT count("aqi") * 0 AS "recent" FROM "air_quality" WHERE time > now() - {lookback}s), (SELECT count("aqi") AS "recent" FROM "air_quality" WHERE time > now() - {window}s) WHERE time > now() - {lookback}s"#
    );
    BuiltIn {
        uid: "iot-aqi-ingestor-stale".into(),
        rule: "AqiIngestorStale",
        title: "AqiIngestorStale".into(),
        datasource: AQI_DATASOURCE_UID,
        query,
        lookback_seconds: lookback,
        evaluator: ("lt", vec![1.0]),
        no_data: "Alerting",
        summary: format!(
            "No new air-quality point for {} ({{{{ $values.B.Value }}}} points in that time)",
            alerts.aqi_stale_after.text
        ),
        description: "Check the aqi-ingestor's log and its aqi_polls_total{outcome} and aqi_last_success_timestamp_seconds; see docs/alerts.md#aqiingestorstale.",
        value_query: None,
        labels: vec![
            ("rule", "AqiIngestorStale".to_owned()),
            ("severity", "warning".to_owned()),
        ],
    }
}

fn expression(ref_id: &str, model: Value) -> Value {
    let mut model = model;
    model["refId"] = ref_id.into();
    model["datasource"] = json!({"type": "__expr__", "uid": EXPRESSION_UID});
    json!({"refId": ref_id, "datasourceUid": EXPRESSION_UID, "model": model})
}

fn influx_query(ref_id: &str, datasource: &str, query: &str, lookback: u64) -> Value {
    json!({
        "refId": ref_id,
        "datasourceUid": datasource,
        "relativeTimeRange": {"from": lookback, "to": 0},
        "model": {
            "refId": ref_id,
            "datasource": {"type": "influxdb", "uid": datasource},
            "query": query,
            "rawQuery": true,
            "resultFormat": "time_series",
            "intervalMs": 60_000,
            "maxDataPoints": 43_200,
        },
    })
}

fn reduce_last(ref_id: &str, of: &str) -> Value {
    expression(
        ref_id,
        json!({"type": "reduce", "expression": of, "reducer": "last"}),
    )
}

/// The rule as Grafana's provisioning file has it.
pub fn rule_json(rule: &BuiltIn) -> Value {
    let (kind, params) = &rule.evaluator;
    let mut data = vec![
        influx_query("A", rule.datasource, &rule.query, rule.lookback_seconds),
        reduce_last("B", "A"),
        expression(
            "C",
            json!({"type": "threshold", "expression": "B",
                   "conditions": [{"evaluator": {"type": kind, "params": params}}]}),
        ),
    ];
    if let Some(value_query) = &rule.value_query {
        data.push(influx_query(
            "D",
            rule.datasource,
            value_query,
            rule.lookback_seconds,
        ));
        data.push(reduce_last("E", "D"));
    }
    let labels: serde_json::Map<String, Value> = rule
        .labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone().into()))
        .collect();
    json!({
        "uid": rule.uid,
        "title": rule.title,
        "condition": "C",
        "data": data,
        "noDataState": rule.no_data,
        "execErrState": "Error",
        // The queries' windows are the durations already: fire at the first evaluation.
        "for": "0s",
        "annotations": {"summary": rule.summary, "description": rule.description},
        "labels": labels,
        "isPaused": false,
    })
}

/// The built-in rule groups' provisioning file.
pub fn document(model: &ValidatedMonitor) -> Value {
    let groups: Vec<Value> = built_in(model)
        .iter()
        .map(|(name, rules)| {
            json!({
                "orgId": 1,
                "name": name,
                "folder": FOLDER,
                "interval": INTERVAL,
                "rules": rules.iter().map(rule_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"apiVersion": 1, "groups": groups})
}
