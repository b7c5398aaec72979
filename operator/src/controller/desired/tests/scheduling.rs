//! Per-component scheduling: each component's nodeSelector, tolerations and affinity reach its
//! own pods, and nothing is set by default.

use super::*;

#[test]
fn no_scheduling_is_set_by_default() {
    for (name, pod) in pod_specs(&desired("{}")) {
        assert_eq!(pod.node_selector, None, "{name}");
        assert_eq!(pod.tolerations, None, "{name}");
        assert_eq!(pod.affinity, None, "{name}");
    }
}

#[test]
fn each_components_node_selector_reaches_its_own_pods() {
    let objects = desired(
        "{influxdb: {nodeSelector: {for: influxdb}}, grafana: {nodeSelector: {for: grafana}},
          coap: {nodeSelector: {for: coap}}, simulator: {nodeSelector: {for: simulator}},
          aqi: {nodeSelector: {for: aqi}}}",
    );
    let expected = [
        ("lab-influxdb", "influxdb"),
        ("lab-grafana", "grafana"),
        ("lab-coap-server", "coap"),
        ("lab-sensor-sim", "simulator"),
        ("lab-aqi-ingestor", "aqi"),
    ];
    let pods = pod_specs(&objects);
    assert_eq!(pods.len(), expected.len());
    for (name, pod) in pods {
        let (_, wanted) = expected
            .iter()
            .find(|(n, _)| *n == name)
            .expect("an expected workload");
        let selector = pod.node_selector.expect("a node selector");
        assert_eq!(
            selector.get("for").map(String::as_str),
            Some(*wanted),
            "{name}"
        );
    }
}

#[test]
fn tolerations_and_affinity_are_passed_through_unchanged() {
    let objects = desired(
        "{grafana: {tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}],
                    affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution:
                      {nodeSelectorTerms: [{matchExpressions: [{key: type, operator: In, values: [kwok]}]}]}}}}}",
    );
    let pods = pod_specs(&objects);
    let (_, grafana) = pods
        .iter()
        .find(|(n, _)| n == "lab-grafana")
        .expect("grafana");
    let json = serde_json::to_value(grafana).expect("json");
    assert_eq!(
        json["tolerations"],
        serde_json::json!([{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}])
    );
    assert_eq!(
        json["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"],
        serde_json::json!(["kwok"])
    );
    for (name, pod) in pods.iter().filter(|(n, _)| n != "lab-grafana") {
        assert!(
            pod.tolerations.is_none() && pod.affinity.is_none(),
            "{name}"
        );
    }
}
