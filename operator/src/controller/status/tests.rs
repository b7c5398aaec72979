//! Conditions from what was applied: pure, so each case is a few lines.

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};

use super::*;
use crate::controller::desired;
use crate::controller::fixtures::model;

fn time(s: i64) -> Time {
    Time(jiff::Timestamp::from_second(s).expect("timestamp"))
}

/// What the API server would hand back after applying: desired objects, with every
/// Deployment and the StatefulSet reporting `ready` replicas.
fn applied(model: &ValidatedMonitor, ready: i32) -> Applied {
    let desired = desired::build(model);
    let mut deployments = desired.deployments;
    for d in &mut deployments {
        d.metadata.generation = Some(1);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            ready_replicas: Some(ready),
            updated_replicas: Some(1),
            replicas: Some(1),
            ..DeploymentStatus::default()
        });
    }
    let mut stateful_sets = desired.stateful_sets;
    for s in &mut stateful_sets {
        s.metadata.generation = Some(1);
        s.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
            observed_generation: Some(1),
            ready_replicas: Some(ready),
            updated_replicas: Some(1),
            replicas: 1,
            ..Default::default()
        });
    }
    Applied {
        deployments,
        stateful_sets,
        services: desired.services,
        autoscalers: desired.autoscalers,
        ..Applied::default()
    }
}

fn condition<'a>(status: &'a IotMonitorStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present")
}

#[test]
fn all_ready_children_make_the_monitor_ready() {
    let m = model("{}");
    let status = reconciled(&m, &applied(&m, 1), None, Some(1), time(100));
    assert_eq!(condition(&status, READY).status, "True");
    assert_eq!(condition(&status, DEGRADED).status, "False");
    assert_eq!(condition(&status, PROGRESSING).status, "False");
    assert_eq!(status.observed_generation, Some(1));
    let aqi = status.components.aqi_ingestor.as_ref().expect("aqi");
    assert_eq!(aqi.summary, "1/1");
    assert_eq!(
        status.endpoints.grafana.as_deref(),
        Some("http://lab-grafana.iot.svc:3000")
    );
    assert_eq!(
        status.endpoints.coap.as_deref(),
        Some("coaps://lab-coap-server.iot.svc:5684")
    );
}

#[test]
fn unready_children_are_named_in_the_message() {
    let m = model("{}");
    let status = reconciled(&m, &applied(&m, 0), None, Some(1), time(100));
    let ready = condition(&status, READY);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "ComponentsNotReady");
    assert!(ready.message.contains("grafana 0/1"), "{}", ready.message);
}

#[test]
fn transition_time_changes_only_on_a_flip() {
    let m = model("{}");
    let first = reconciled(&m, &applied(&m, 1), None, Some(1), time(100));
    let same = reconciled(&m, &applied(&m, 1), Some(&first), Some(1), time(200));
    assert_eq!(first, same, "an unchanged world gives an identical status");
    let flipped = reconciled(&m, &applied(&m, 0), Some(&same), Some(1), time(300));
    assert_eq!(condition(&flipped, READY).last_transition_time, time(300));
    assert_eq!(
        condition(&flipped, DEGRADED).last_transition_time,
        time(100)
    );
}

#[test]
fn disabled_components_say_so() {
    let m = model("{aqi: {enabled: false}}");
    let status = reconciled(&m, &applied(&m, 1), None, Some(1), time(1));
    let aqi = status.components.aqi_ingestor.expect("aqi");
    assert_eq!(aqi.summary, "Disabled");
}

#[test]
fn failures_set_degraded_and_keep_the_rest() {
    let m = model("{}");
    let ok = reconciled(&m, &applied(&m, 1), None, Some(1), time(1));
    let bad = failed(Some(&ok), Some(2), "ApplyFailed", "boom".into(), time(2));
    let degraded = condition(&bad, DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ApplyFailed")
    );
    assert_eq!(condition(&bad, READY).status, "True");
}

#[test]
fn node_port_endpoints_name_the_port() {
    let svc = Service {
        metadata: kube::api::ObjectMeta {
            name: Some("g".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 3000,
                node_port: Some(30300),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        endpoint("http", Some(&svc), "ns", "http").as_deref(),
        Some("http://<node>:30300")
    );
    assert_eq!(endpoint("http", Some(&svc), "ns", "other"), None);
}

#[test]
fn the_coap_endpoint_is_coaps_and_plain_coap_shows_only_when_open() {
    let m = model("{}");
    let status = reconciled(&m, &applied(&m, 1), None, Some(1), time(100));
    assert_eq!(
        status.endpoints.coap.as_deref(),
        Some("coaps://lab-coap-server.iot.svc:5684")
    );
    assert_eq!(status.endpoints.coap_plaintext, None);

    let m = model(
        "{coap: {plaintext: true, serviceType: NodePort, nodePort: 30683, dtlsNodePort: 30684}}",
    );
    let status = reconciled(&m, &applied(&m, 1), None, Some(1), time(100));
    assert_eq!(
        status.endpoints.coap.as_deref(),
        Some("coaps://<node>:30684")
    );
    assert_eq!(
        status.endpoints.coap_plaintext.as_deref(),
        Some("coap://<node>:30683")
    );
}

#[test]
fn the_devices_are_counted_with_the_simulators() {
    let m = model("{coap: {devices: [{name: door, place: hall}]}, simulator: {sensors: 3}}");
    let status = reconciled(&m, &applied(&m, 1), None, Some(1), time(100));
    assert_eq!(status.devices, Some(4));
    let m = model("{simulator: {enabled: false}}");
    let status = reconciled(&m, &applied(&m, 1), None, Some(1), time(100));
    assert_eq!(status.devices, Some(0));
}

#[test]
fn a_dropped_tolerance_is_reported_not_hidden() {
    let m = model("{}");
    let mut a = applied(&m, 1);
    for hpa in &mut a.autoscalers {
        if let Some(down) = hpa
            .spec
            .behavior
            .as_mut()
            .and_then(|b| b.scale_down.as_mut())
        {
            down.tolerance = None;
        }
    }
    let status = reconciled(&m, &a, None, Some(1), time(1));
    assert!(
        condition(&status, READY)
            .message
            .contains("HPAConfigurableTolerance")
    );
}

fn with_hpa_conditions(a: &mut Applied, active: (&str, &str), rescaled_to: i32) {
    use k8s_openapi::api::autoscaling::v2::{
        HorizontalPodAutoscalerCondition as C, HorizontalPodAutoscalerStatus,
    };
    let c = |type_: &str, status: &str, reason: &str, message: String| C {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: None,
        observed_generation: None,
    };
    for hpa in &mut a.autoscalers {
        hpa.status = Some(HorizontalPodAutoscalerStatus {
            current_replicas: Some(rescaled_to),
            desired_replicas: rescaled_to,
            conditions: Some(vec![
                c(
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    format!(
                        "the HPA controller was able to update the target scale to {rescaled_to}"
                    ),
                ),
                c(
                    "ScalingActive",
                    active.0,
                    active.1,
                    format!("{} metric", active.1),
                ),
            ]),
            ..Default::default()
        });
    }
}

#[test]
fn the_autoscaling_condition_follows_the_hpas_and_flips_only_on_a_change() {
    let m = model("{}");
    let mut a = applied(&m, 1);
    let fresh = reconciled(&m, &a, None, Some(1), time(1));
    assert_eq!(condition(&fresh, AUTOSCALING).status, "Unknown");

    with_hpa_conditions(&mut a, ("False", "FailedGetResourceMetric"), 1);
    let bad = reconciled(&m, &a, Some(&fresh), Some(1), time(2));
    let c = condition(&bad, AUTOSCALING);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "FailedGetResourceMetric")
    );
    assert_eq!(c.last_transition_time, time(2));
    assert!(c.message.starts_with("lab-grafana: "), "{}", c.message);

    with_hpa_conditions(&mut a, ("True", "ValidMetricFound"), 2);
    let good = reconciled(&m, &a, Some(&bad), Some(1), time(3));
    assert_eq!(condition(&good, AUTOSCALING).status, "True");
    assert_eq!(condition(&good, AUTOSCALING).last_transition_time, time(3));

    // A scaling step (another replica count in AbleToScale's message) changes nothing.
    with_hpa_conditions(&mut a, ("True", "ValidMetricFound"), 3);
    let again = reconciled(&m, &a, Some(&good), Some(1), time(4));
    assert_eq!(again, good, "no status write on a scaling step");
}

#[test]
fn without_autoscaling_there_is_no_autoscaling_condition() {
    let on = model("{}");
    let before = reconciled(&on, &applied(&on, 1), None, Some(1), time(1));
    assert!(before.conditions.iter().any(|c| c.type_ == AUTOSCALING));
    let off = model("{autoscaling: {enabled: false}}");
    let after = reconciled(&off, &applied(&off, 1), Some(&before), Some(2), time(2));
    assert!(after.conditions.iter().all(|c| c.type_ != AUTOSCALING));
}

#[test]
fn a_stalled_influxdb_says_why_in_its_summary_and_the_ready_message() {
    let m = model("{}");
    let mut applied = applied(&m, 0);
    applied.influxdb_trouble = Some(crate::controller::diagnose::ContainerTrouble {
        reason: "CrashLoopBackOff".into(),
        restarts: 4,
        message: "run: create server: mkdir all: mkdir /var/lib/influxdb/meta: permission denied"
            .into(),
    });
    let status = reconciled(&m, &applied, None, Some(1), time(100));
    let summary = &status
        .components
        .influxdb
        .as_ref()
        .expect("influxdb")
        .summary;
    assert!(
        summary.starts_with("0/1 CrashLoopBackOff after 4 restart(s): run: create server"),
        "{summary}"
    );
    assert!(summary.contains("storageClassName"), "{summary}");
    let ready = condition(&status, READY);
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains(summary.as_str()),
        "{}",
        ready.message
    );
    // The other components keep their plain summaries.
    assert_eq!(
        status.components.grafana.as_ref().expect("grafana").summary,
        "0/1"
    );
}
