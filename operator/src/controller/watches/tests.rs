//! Which watch events wake the owner, what the cache keeps, and a cache filled from objects
//! for the apply step's tests.

use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use super::*;
use crate::controller::fixtures::cache_of;

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
fn a_first_sighting_wakes_the_owner_and_a_repeat_does_not() {
    let mut filter = ChangeFilter::new(Deployment::fingerprint);
    let d = deployment("1", rolling(0));
    assert!(filter.admit(watcher::Event::Apply(d.clone())).is_some());
    assert!(filter.admit(watcher::Event::Apply(d)).is_none());
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
    annotated.metadata.annotations = Some([(APPLIED.into(), "other".into())].into());
    assert!(filter.admit(watcher::Event::Apply(annotated)).is_some());
}

const APPLIED: &str = crate::controller::apply::APPLIED_HASH;

#[test]
fn a_deletion_always_wakes_the_owner() {
    let mut filter = ChangeFilter::new(Deployment::fingerprint);
    let d = deployment("1", rolling(1));
    filter.admit(watcher::Event::Apply(d.clone()));
    assert!(filter.admit(watcher::Event::Delete(d.clone())).is_some());
    // Created again under the same name: a new object, seen for the first time.
    let mut again = d;
    again.metadata.uid = Some("d-2".into());
    assert!(filter.admit(watcher::Event::Apply(again)).is_some());
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
fn a_relist_repeats_nothing_unchanged_and_forgets_what_is_gone() {
    let cm = |name: &str, uid: &str| ConfigMap {
        metadata: meta(name, uid, "1"),
        ..ConfigMap::default()
    };
    let mut filter = ChangeFilter::new(ConfigMap::fingerprint);
    filter.admit(watcher::Event::Apply(cm("a", "1")));
    filter.admit(watcher::Event::Apply(cm("b", "2")));
    filter.admit(watcher::Event::Init);
    assert!(
        filter
            .admit(watcher::Event::InitApply(cm("a", "1")))
            .is_none()
    );
    filter.admit(watcher::Event::InitDone);
    assert_eq!(
        filter.seen.len(),
        1,
        "b was deleted while the watch was down"
    );
    assert!(filter.admit(watcher::Event::Apply(cm("b", "2"))).is_some());
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

fn service(namespace: &str, name: &str, instance: &str) -> Value {
    json!({
        "kind": "Service",
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("u-{name}"),
            "resourceVersion": "7", "generation": 1,
            "labels": {"app.kubernetes.io/instance": instance, "app.kubernetes.io/managed-by": "iot-operator"},
            "annotations": {APPLIED: "h"},
            "ownerReferences": [{"apiVersion": "iot.operator.dev/v1alpha1", "kind": "IotMonitor",
                                 "name": instance, "uid": "m-1", "controller": true}],
        },
        "spec": {"ports": [{"name": "coap", "port": 5683, "protocol": "UDP"}], "clusterIP": "198.19.64.9"},
    })
}

#[test]
fn a_cached_child_reads_back_as_the_pruned_object_it_was() {
    let object = service("iot", "lab-coap", "lab");
    let cache = cache_of([&object]);
    let mut want: Service = serde_json::from_value(object).expect("service");
    want.prune();
    assert_eq!(cache.get::<Service>("iot", "lab-coap"), Some(want));
    assert_eq!(cache.get::<Service>("other", "lab-coap"), None);
    assert!(!cache.knows_absent::<Service>("iot", "lab-coap"));
    assert!(cache.knows_absent::<Service>("iot", "lab-grafana"));
}

#[test]
fn a_monitors_children_are_listed_by_its_instance_in_its_namespace() {
    let objects = [
        service("iot", "lab-coap", "lab"),
        service("iot", "lab-grafana", "lab"),
        service("iot", "lab2-coap", "lab2"),
        service("dev", "lab-coap", "lab"),
    ];
    let cache = cache_of(&objects);
    let mut names: Vec<String> = cache
        .list::<Service>("iot", "lab")
        .expect("services are cached")
        .into_iter()
        .map(|s| s.metadata.name.expect("named"))
        .collect();
    names.sort();
    assert_eq!(names, ["lab-coap", "lab-grafana"]);
    assert_eq!(
        cache.list::<Service>("iot", "nobody").map(|l| l.len()),
        Some(0)
    );
}
