//! What the cache shows of a child, and a monitor's children listed from it.

use kube::runtime::reflector::store::Writer;
use serde_json::{Value, json};

use super::*;
use crate::controller::fixtures::cache_of;
use crate::controller::known_state::decide::APPLIED_HASH;

fn service(namespace: &str, name: &str, instance: &str) -> Value {
    json!({
        "kind": "Service",
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("u-{name}"),
            "resourceVersion": "7", "generation": 1,
            "labels": {"app.kubernetes.io/instance": instance, "app.kubernetes.io/managed-by": "iot-operator"},
            "annotations": {APPLIED_HASH: "h"},
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
    assert_eq!(cache.seen::<Service>("iot", "lab-coap"), Seen::Cached(want));
    assert_eq!(cache.seen::<Service>("other", "lab-coap"), Seen::Absent);
    assert_eq!(cache.seen::<Service>("iot", "lab-grafana"), Seen::Absent);
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

#[test]
fn a_kind_without_a_store_or_before_its_first_list_is_unknown() {
    assert_eq!(
        ChildCache::default().seen::<Service>("iot", "lab-coap"),
        Seen::Unknown
    );
    let mut cache = ChildCache::default();
    let writer = Writer::<Packed<Service>>::default();
    Service::set_store(&mut cache, writer.as_reader());
    assert_eq!(cache.seen::<Service>("iot", "lab-coap"), Seen::Unknown);
}
