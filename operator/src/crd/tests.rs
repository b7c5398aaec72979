//! The CRD: defaults, generated YAML in step with the checked-in copies, examples that validate.

use super::*;

#[test]
fn empty_spec_deserializes_to_the_defaults() {
    let spec: IotMonitorSpec = serde_yaml::from_str("{}").expect("parse");
    assert_eq!(spec, IotMonitorSpec::default());
    assert_eq!(spec.autoscaling.scale_out.cpu_percent, 60);
    assert_eq!(spec.autoscaling.scale_in.hold_seconds, 900);
    assert!(spec.simulator.enabled && spec.aqi.enabled);
}

#[test]
fn defaults_are_closed_and_current() {
    let spec = IotMonitorSpec::default();
    assert!(
        !spec.grafana.anonymous_viewer,
        "anonymous Grafana access is opt-in"
    );
    // InfluxDB's current 1.x line, not the end-of-life 1.8.
    assert_eq!(spec.influxdb.image, "influxdb:1.13.1");
    // Grafana 12: outside CVE-2024-1313 (9.5.0-9.5.17, 10.0.0-10.0.12, 10.1.0-10.1.8,
    // 10.2.0-10.2.5, 10.3.0-10.3.4).
    assert_eq!(spec.grafana.image, "grafana/grafana:12.4.4");
    // The quick start turns anonymous access on, saying so, and names the same images.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/iotmonitor.yaml"
    ))
    .expect("example");
    let quick_start: IotMonitor = serde_yaml::from_str(&example).expect("example parses");
    assert!(quick_start.spec.grafana.anonymous_viewer);
    assert_eq!(quick_start.spec.grafana.image, spec.grafana.image);
    assert_eq!(quick_start.spec.influxdb.image, spec.influxdb.image);
}

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let generated = crd_yaml().expect("serialize crd");
    let checked_in = include_str!("../../../crds/iotmonitor.yaml");
    assert!(
        generated == checked_in,
        "crds/iotmonitor.yaml is stale: run `make crd` (cargo run -p iot-operator -- crd > crds/iotmonitor.yaml)"
    );
}

#[test]
fn chart_crd_matches_the_generated_one() {
    let generated = crd_yaml().expect("serialize crd");
    let in_chart = include_str!("../../../charts/iot-operator/crds/iotmonitor.yaml");
    assert!(
        generated == in_chart,
        "charts/iot-operator/crds/iotmonitor.yaml is stale: cp crds/iotmonitor.yaml charts/iot-operator/crds/"
    );
}

#[test]
fn examples_are_valid_monitors() {
    for (file, text) in [
        (
            "iotmonitor-minimal.yaml",
            include_str!("../../../examples/iotmonitor-minimal.yaml"),
        ),
        (
            "iotmonitor.yaml",
            include_str!("../../../examples/iotmonitor.yaml"),
        ),
    ] {
        let mut monitor: IotMonitor =
            serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        monitor.metadata.namespace = Some("default".into());
        monitor.metadata.uid = Some("uid".into());
        crate::controller::validate::validate(&monitor, &Default::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn crd_names_and_printer_columns() {
    let yaml = crd_yaml().expect("serialize crd");
    for needle in [
        "group: iot.operator.dev",
        "- iotmon",
        "name: v1alpha1",
        "scope: Namespaced",
        "name: Ready",
        "name: Grafana",
        "name: CoAP",
        "name: Autoscaling",
        "name: AQI",
        "name: Age",
        "x-kubernetes-validations",
        "self.scaleIn.cpuPercent < self.scaleOut.cpuPercent",
    ] {
        assert!(yaml.contains(needle), "CRD lacks {needle}");
    }
}

#[test]
fn crd_schema_carries_defaults_so_the_api_server_fills_them() {
    let yaml = crd_yaml().expect("serialize crd");
    let crd: serde_json::Value = serde_yaml::from_str(&yaml).expect("parse");
    let autoscaling = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["autoscaling"];
    assert_eq!(autoscaling["default"]["minReplicas"], 1);
    assert_eq!(autoscaling["default"]["scaleOut"]["cpuPercent"], 60);
}

#[test]
fn every_component_can_be_scheduled() {
    let yaml = crd_yaml().expect("serialize crd");
    let crd: serde_json::Value = serde_yaml::from_str(&yaml).expect("parse");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for component in ["influxdb", "grafana", "coap", "simulator", "aqi"] {
        let fields = &spec[component]["properties"];
        for field in ["nodeSelector", "tolerations", "affinity"] {
            assert!(fields[field].is_object(), "spec.{component}.{field}");
            assert!(
                fields[field]["description"].is_string(),
                "spec.{component}.{field} is described"
            );
        }
        // Defaults leave scheduling out, so a monitor without it applies none.
        assert!(spec[component]["default"].get("nodeSelector").is_none());
    }
}

#[test]
fn scheduling_fields_read_as_in_a_pod_spec() {
    let spec: IotMonitorSpec = serde_yaml::from_str(
        "{grafana: {nodeSelector: {disktype: ssd}, tolerations: [{key: edge, operator: Exists}]}}",
    )
    .expect("parse");
    assert_eq!(spec.grafana.scheduling.node_selector["disktype"], "ssd");
    assert_eq!(
        spec.grafana.scheduling.tolerations[0].key.as_deref(),
        Some("edge")
    );
    assert!(spec.coap.scheduling.node_selector.is_empty());
}
