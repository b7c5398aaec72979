//! The alerting provisioning files: Grafana's schema field by field, datasource references,
//! thresholds from the spec, contact points' `$VAR`s and the pod's environment.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::*;
use crate::controller::desired::grafana;
use crate::controller::fixtures::model;
use crate::controller::validate::{Allowed, EXPRESSION_UID, UserRuleFile, check_file};

fn file(cm: &ConfigMap, key: &str) -> Value {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("{key} in the ConfigMap"));
    serde_yaml::from_str(text).expect("YAML")
}

/// The uids of the datasources Grafana is provisioned with, read from its own file.
fn provisioned_datasources(model: &ValidatedMonitor) -> Vec<String> {
    let objects = grafana::build(model);
    file(&objects.provisioning, "datasources.yaml")["datasources"]
        .as_array()
        .expect("datasources")
        .iter()
        .map(|d| d["uid"].as_str().expect("uid").to_owned())
        .collect()
}

fn rules_of(spec: &str) -> (ValidatedMonitor, Value) {
    let m = model(spec);
    let cm = config_map(&m).expect("alerting on by default");
    let doc = file(&cm, RULES_FILE);
    (m, doc)
}

fn all_rules(doc: &Value) -> Vec<&Value> {
    doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect()
}

fn query_of<'a>(rule: &'a Value, ref_id: &str) -> &'a str {
    rule["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|d| d["refId"] == ref_id)
        .and_then(|d| d["model"]["query"].as_str())
        .expect("a query")
}

#[test]
fn the_rules_file_follows_grafanas_schema_and_names_only_provisioned_datasources() {
    let (m, doc) = rules_of("{}");
    let datasources = provisioned_datasources(&m);
    let ds: Vec<&str> = datasources.iter().map(String::as_str).collect();
    let uids = check_file(&doc, Allowed::RuleGroups, &ds).expect("valid rule file");
    assert_eq!(
        uids.len(),
        9,
        "three sensor rules per measurement, IngestFailing, two AQI rules"
    );
    for rule in all_rules(&doc) {
        for query in rule["data"].as_array().expect("data") {
            let uid = query["datasourceUid"].as_str().expect("uid");
            assert!(uid == EXPRESSION_UID || ds.contains(&uid), "{uid}");
            // The model names the same datasource as the query.
            if uid != EXPRESSION_UID {
                assert_eq!(query["model"]["datasource"]["uid"], uid);
            }
        }
    }
}

#[test]
fn every_rule_names_its_sensor_or_location_and_value_in_its_summary() {
    let (_, doc) = rules_of("{}");
    for rule in all_rules(&doc) {
        let summary = rule["annotations"]["summary"].as_str().expect("summary");
        let names_subject = summary.contains("$labels.sensor")
            || summary.contains("$labels.location_id")
            || ["iot-aqi-ingestor-stale", "iot-ingest-failing"]
                .contains(&rule["uid"].as_str().unwrap_or(""));
        assert!(names_subject, "{summary}");
        assert!(summary.contains("$values."), "{summary}");
        assert!(rule["labels"]["rule"].is_string());
    }
}

#[test]
fn no_query_holds_a_dollar_sign_grafana_would_expand() {
    let (_, doc) = rules_of("coap: {devices: [{name: desk, place: office}]}");
    for rule in all_rules(&doc) {
        for query in rule["data"].as_array().expect("data") {
            let model = query["model"].to_string();
            assert!(!model.contains('$'), "{model}");
        }
    }
}

#[test]
fn thresholds_come_from_the_spec() {
    let (_, doc) = rules_of(
        "alerts: {silentAfter: 15m, stuckAfter: 2h, aqiBand: 8, aqiStaleAfter: 90m, ingestFailurePercent: 12, temperature: {min: -10, max: 50}}",
    );
    let rule = |uid: &str| {
        all_rules(&doc)
            .into_iter()
            .find(|r| r["uid"] == uid)
            .unwrap_or_else(|| panic!("{uid}"))
            .clone()
    };
    let evaluator = |r: &Value| {
        let c = r["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|d| d["refId"] == "C")
            .expect("C")
            .clone();
        c["model"]["conditions"][0]["evaluator"].clone()
    };
    assert!(query_of(&rule("iot-sensor-silent-temperature"), "A").contains("now() - 900s"));
    assert!(query_of(&rule("iot-sensor-stuck-humidity"), "A").contains("now() - 7200s"));
    assert!(query_of(&rule("iot-aqi-ingestor-stale"), "A").contains("now() - 5400s"));
    assert_eq!(evaluator(&rule("iot-air-quality-high"))["params"][0], 7.5);
    assert_eq!(evaluator(&rule("iot-ingest-failing"))["params"][0], 12.0);
    let range = evaluator(&rule("iot-sensor-out-of-range-temperature"));
    assert_eq!(range["type"], "outside_range");
    assert_eq!(range["params"], serde_json::json!([-9.95, 49.95]));
}

#[test]
fn registered_devices_are_named_in_the_sensor_queries() {
    let (_, doc) = rules_of("coap: {devices: [{name: desk, place: office}]}");
    let silent = all_rules(&doc)[0];
    assert!(
        query_of(silent, "A").contains(r#""sensor" =~ /^(desk|sim-1|sim-2|sim-3|sim-4)\z/"#),
        "{}",
        query_of(silent, "A")
    );
    // Without devices every place/sensor pair seen is watched.
    let (_, doc) = rules_of("simulator: {enabled: false}");
    assert!(!query_of(all_rules(&doc)[0], "A").contains("=~"));
}

#[test]
fn air_quality_rules_come_with_the_ingestor() {
    let (_, doc) = rules_of("aqi: {enabled: false}");
    let groups: Vec<&str> = doc["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["name"].as_str().expect("name"))
        .collect();
    assert_eq!(groups, ["iot-sensors", "iot-ingest"]);
}

#[test]
fn alerting_off_provisions_nothing_and_mounts_nothing() {
    let m = model("alerts: {enabled: false}");
    assert!(config_map(&m).is_none());
    let g = grafana::build(&m);
    assert!(g.alerting.is_none());
    let spec = g.deployment.spec.template.spec.expect("pod");
    assert!(
        spec.volumes
            .unwrap_or_default()
            .iter()
            .all(|v| v.name != "alerting")
    );
}

const CONTACTS: &str = r##"
alerts:
  smtp: {host: "mail.example.org:587", fromAddress: alerts@example.org, credentialsSecret: mail}
  contactPoints:
    - {name: mail, email: {addresses: [ops@example.org, lab@example.org]}}
    - {name: hook, webhook: {urlSecret: {name: alert-urls, key: hook}}}
    - {name: chat, slack: {urlSecret: {name: alert-urls, key: slack}, recipient: "#lab"}}
"##;

#[test]
fn contact_points_are_provisioned_with_urls_from_the_environment() {
    let m = model(CONTACTS);
    let cm = config_map(&m).expect("alerting");
    let doc = file(&cm, NOTIFICATIONS_FILE);
    check_file(&doc, Allowed::Notifications, &[]).expect("valid notifications file");
    let points = doc["contactPoints"].as_array().expect("points");
    let settings = |i: usize| points[i]["receivers"][0]["settings"].clone();
    assert_eq!(settings(0)["addresses"], "ops@example.org;lab@example.org");
    assert_eq!(settings(1)["url"], "$ALERT_CONTACT_1_URL");
    assert_eq!(settings(2)["url"], "$ALERT_CONTACT_2_URL");
    assert_eq!(settings(2)["recipient"], "#lab");
    for p in points {
        let uid = p["receivers"][0]["uid"].as_str().expect("uid");
        assert!(uid.len() <= 40, "{uid}");
    }
    // Every contact point is told of every alert.
    let routes = doc["policies"][0]["routes"].as_array().expect("routes");
    let told: BTreeSet<&str> = routes
        .iter()
        .filter(|r| r["continue"] == true && r.get("object_matchers").is_none())
        .map(|r| r["receiver"].as_str().expect("receiver"))
        .collect();
    assert_eq!(told, BTreeSet::from(["mail", "hook", "chat"]));

    // The pod has each `$VAR` from the Secret key the spec names.
    let g = grafana::build(&m);
    let pod = g.deployment.spec.template.spec.expect("pod");
    let env: BTreeMap<String, (String, String)> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let key = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), (key.name.clone(), key.key.clone())))
        })
        .collect();
    assert_eq!(
        env.get("ALERT_CONTACT_1_URL"),
        Some(&("alert-urls".to_owned(), "hook".to_owned()))
    );
    assert_eq!(
        env.get("ALERT_CONTACT_2_URL"),
        Some(&("alert-urls".to_owned(), "slack".to_owned()))
    );
    assert!(!env.contains_key("ALERT_CONTACT_0_URL"), "email has no URL");
    // Email goes through the spec's mail server, logging in with the Secret's keys.
    assert_eq!(
        env.get("GF_SMTP_PASSWORD"),
        Some(&("mail".to_owned(), "password".to_owned()))
    );
    let plain = |name: &str| {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(plain("GF_SMTP_ENABLED").as_deref(), Some("true"));
    assert_eq!(
        plain("GF_SMTP_HOST").as_deref(),
        Some("mail.example.org:587")
    );
    let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
    assert!(mounts.iter().any(|v| v.mount_path == ALERTING_DIR));
}

#[test]
fn without_contact_points_grafanas_own_policy_stays() {
    let cm = config_map(&model("{}")).expect("alerting");
    assert!(!cm.data.expect("data").contains_key(NOTIFICATIONS_FILE));
}

#[test]
fn user_rule_files_are_copied_and_roll_grafana_when_they_change() {
    let mut m = model("{}");
    let before = grafana::build(&m).deployment;
    m.alerts
        .as_mut()
        .expect("alerts")
        .user_rules
        .push(UserRuleFile {
            config_map: "team".into(),
            key: "kitchen.yaml".into(),
            content: "apiVersion: 1\ngroups: []\n".into(),
        });
    let cm = config_map(&m).expect("alerting");
    assert!(
        cm.data
            .expect("data")
            .contains_key("user.team.kitchen.yaml")
    );
    let after = grafana::build(&m).deployment;
    let hash = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    };
    assert_ne!(hash(&before), hash(&after));
}

#[test]
fn the_alerting_config_map_fits_with_the_most_named_devices() {
    use super::rules::MAX_NAMED_DEVICES;
    // The longest device names (63 characters) the queries still name one by one.
    let devices: Vec<String> = (0..MAX_NAMED_DEVICES)
        .map(|i| format!("{{name: d{i:0>62}, place: p}}"))
        .collect();
    let m = model(&format!(
        "simulator: {{enabled: false}}\ncoap: {{devices: [{}]}}",
        devices.join(", ")
    ));
    let cm = config_map(&m).expect("alerting");
    let bytes: usize = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    println!("alerting ConfigMap with {MAX_NAMED_DEVICES} named devices: {bytes} bytes");
    assert!(
        bytes < 1024 * 1024,
        "{bytes} bytes: over a ConfigMap's 1 MiB"
    );
    let default = config_map(&model("{}")).expect("alerting");
    let bytes: usize = default
        .data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    println!("alerting ConfigMap of spec {{}}: {bytes} bytes");
}
