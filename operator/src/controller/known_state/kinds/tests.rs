//! Which changes of each kind wake the owner (through the change filter, as the watches see
//! them), and what the cache keeps of each kind.

use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus;
use kube::runtime::watcher;
use serde_json::json;

use super::*;
use crate::controller::known_state::changes::ChangeFilter;
use crate::controller::known_state::decide::APPLIED_HASH;

fn meta(name: &str, uid: &str, rv: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("iot".into()),
        uid: Some(uid.into()),
        resource_version: Some(rv.into()),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

fn deployment(rv: &str, status: DeploymentStatus) -> Deployment {
    Deployment {
        metadata: meta("lab-grafana", "d-1", rv),
        status: Some(status),
        ..Deployment::default()
    }
}

fn rolling(ready: i32) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(1),
        updated_replicas: Some(1),
        ready_replicas: Some(ready),
        ..DeploymentStatus::default()
    }
}

#[test]
fn readiness_wakes_the_owner_but_condition_timestamps_do_not() {
    let mut filter = ChangeFilter::new(Deployment::fingerprint);
    filter.admit(watcher::Event::Apply(deployment("1", rolling(0))));
    let mut touched = rolling(0);
    touched.conditions = Some(vec![Default::default()]);
    // The watch prunes each object before the filter sees it, as here.
    let mut touched = deployment("2", touched);
    touched.prune();
    assert!(
        filter.admit(watcher::Event::Apply(touched)).is_none(),
        "only the conditions changed"
    );
    assert!(
        filter
            .admit(watcher::Event::Apply(deployment("3", rolling(1))))
            .is_some(),
        "a replica became ready"
    );
}

#[test]
fn a_spec_or_annotation_change_wakes_the_owner() {
    let mut filter = ChangeFilter::new(Deployment::fingerprint);
    filter.admit(watcher::Event::Apply(deployment("1", rolling(1))));
    let mut edited = deployment("2", rolling(1));
    edited.metadata.generation = Some(2);
    assert!(filter.admit(watcher::Event::Apply(edited)).is_some());
    let mut annotated = deployment("3", rolling(1));
    annotated.metadata.generation = Some(2);
    annotated.metadata.annotations = Some([(APPLIED_HASH.into(), "other".into())].into());
    assert!(filter.admit(watcher::Event::Apply(annotated)).is_some());
}

#[test]
fn hpa_status_writes_do_not_wake_the_owner() {
    let hpa = |rv: &str, desired: i32| HorizontalPodAutoscaler {
        metadata: meta("lab-grafana", "h-1", rv),
        status: Some(HorizontalPodAutoscalerStatus {
            desired_replicas: desired,
            ..HorizontalPodAutoscalerStatus::default()
        }),
        ..HorizontalPodAutoscaler::default()
    };
    let mut filter = ChangeFilter::new(HorizontalPodAutoscaler::fingerprint);
    assert!(filter.admit(watcher::Event::Apply(hpa("1", 1))).is_some());
    assert!(filter.admit(watcher::Event::Apply(hpa("2", 3))).is_none());
    let mut edited = hpa("3", 3);
    edited.spec.max_replicas = 9;
    assert!(filter.admit(watcher::Event::Apply(edited)).is_some());
}

#[test]
fn an_hpa_condition_change_wakes_the_owner_and_the_cache_keeps_the_conditions() {
    use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscalerCondition, MetricStatus};
    let hpa = |rv: &str, active: &str, metrics: usize| HorizontalPodAutoscaler {
        metadata: meta("lab-coap-server", "h-2", rv),
        status: Some(HorizontalPodAutoscalerStatus {
            conditions: Some(vec![HorizontalPodAutoscalerCondition {
                type_: "ScalingActive".into(),
                status: active.into(),
                reason: Some(
                    if active == "True" {
                        "ValidMetricFound"
                    } else {
                        "FailedGetResourceMetric"
                    }
                    .into(),
                ),
                message: Some(format!("{metrics} metrics")),
                ..HorizontalPodAutoscalerCondition::default()
            }]),
            current_metrics: Some(vec![MetricStatus::default(); metrics]),
            ..HorizontalPodAutoscalerStatus::default()
        }),
        ..HorizontalPodAutoscaler::default()
    };
    let mut filter = ChangeFilter::new(HorizontalPodAutoscaler::fingerprint);
    assert!(
        filter
            .admit(watcher::Event::Apply(hpa("1", "True", 1)))
            .is_some()
    );
    // New metrics (and a message naming them) alone: no wake-up.
    assert!(
        filter
            .admit(watcher::Event::Apply(hpa("2", "True", 2)))
            .is_none()
    );
    // Metrics become unavailable: the owner's Autoscaling condition must follow.
    assert!(
        filter
            .admit(watcher::Event::Apply(hpa("3", "False", 0)))
            .is_some()
    );

    let mut cached = hpa("4", "False", 3);
    cached.prune();
    let status = cached.status.expect("status kept");
    assert!(status.current_metrics.is_none());
    assert_eq!(
        status.conditions.expect("conditions kept")[0]
            .reason
            .as_deref(),
        Some("FailedGetResourceMetric")
    );
}

#[test]
fn a_stateful_set_revision_change_wakes_the_owner() {
    let sts = |rv: &str, revision: &str| StatefulSet {
        metadata: meta("lab-influxdb", "s-1", rv),
        status: Some(StatefulSetStatus {
            update_revision: Some(revision.into()),
            ..StatefulSetStatus::default()
        }),
        ..StatefulSet::default()
    };
    let mut filter = ChangeFilter::new(StatefulSet::fingerprint);
    filter.admit(watcher::Event::Apply(sts("1", "a")));
    assert!(filter.admit(watcher::Event::Apply(sts("2", "a"))).is_none());
    assert!(filter.admit(watcher::Event::Apply(sts("3", "b"))).is_some());
}

#[test]
fn kinds_without_status_churn_wake_the_owner_on_every_change() {
    let cm = |rv: &str| ConfigMap {
        metadata: meta("lab-grafana", "c-1", rv),
        ..ConfigMap::default()
    };
    let mut filter = ChangeFilter::new(ConfigMap::fingerprint);
    filter.admit(watcher::Event::Apply(cm("1")));
    assert!(filter.admit(watcher::Event::Apply(cm("1"))).is_none());
    assert!(filter.admit(watcher::Event::Apply(cm("2"))).is_some());
}

#[test]
fn the_cache_keeps_no_pod_template_config_content_or_credential() {
    let mut d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "x", "managedFields": [{"manager": "m"}]},
        "spec": {"replicas": 2, "selector": {}, "template": {"spec": {"containers": [{"name": "c"}]}}},
    }))
    .expect("deployment");
    d.status = Some(DeploymentStatus {
        ready_replicas: Some(1),
        conditions: Some(vec![Default::default()]),
        ..DeploymentStatus::default()
    });
    d.prune();
    assert_eq!(d.metadata.managed_fields, None);
    let status = d.status.clone().expect("the status reads it");
    assert_eq!((status.ready_replicas, status.conditions), (Some(1), None));
    assert_eq!(d.spec.template, PodTemplateSpec::default());
    assert_eq!(d.spec.replicas, Some(2), "the status reads it");

    let mut cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "x"}, "data": {"a": "big"}}))
            .expect("configmap");
    cm.prune();
    assert_eq!(cm.data, None);

    let mut secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "x"}, "data": {"password": "c2VjcmV0"}}),
    )
    .expect("secret");
    secret.prune();
    let data = secret.data.expect("keys kept");
    assert_eq!(data.keys().collect::<Vec<_>>(), ["password"]);
    assert!(data["password"].0.is_empty(), "no value kept");
}
