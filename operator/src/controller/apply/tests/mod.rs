//! The apply step against an in-memory API server: the order of the writes, no write when
//! nothing changed, drift repaired, and only our own unwanted children deleted.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::*;
use crate::controller::desired;
use crate::controller::fixtures::cache_of;
use crate::controller::fixtures::model;
use crate::controller::known_state::Feed;
use crate::controller::mock_api::MockApi;

mod devices;

const NS: &str = "/namespaces/iot";

fn path(group_version: &str, resource: &str, name: &str) -> String {
    let root = if group_version == "v1" {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{group_version}")
    };
    format!("{root}{NS}/{resource}/{name}")
}

struct Fixture {
    client: Client,
    api: MockApi,
    metrics: Metrics,
    memo: Arc<WriteMemo>,
    /// Empty: every read goes to the API server, as before the watches have synced.
    cache: ChildCache,
}

impl Fixture {
    fn new() -> Self {
        let (client, api) = MockApi::start();
        Self {
            client,
            api,
            metrics: Metrics::register(&mut Registry::default()),
            memo: Arc::default(),
            cache: ChildCache::default(),
        }
    }

    /// The cache now holds what the server holds, as the watches would once they caught up.
    fn sync_cache(&mut self) {
        self.cache = cache_of(&self.api.objects());
    }

    async fn apply(&self, spec: &str) -> Applied {
        let model = model(spec);
        Applier::new(
            self.client.clone(),
            &model,
            &self.metrics,
            &self.memo,
            &self.cache,
        )
        .apply_all(desired::build(&model))
        .await
        .expect("apply succeeds")
    }

    /// Writes since the last call, as `(resource, name)`.
    fn take_writes(&self) -> Vec<(String, String)> {
        let writes = self.api.writes();
        self.api.clear_calls();
        writes
    }
}

fn resources(writes: &[(String, String)]) -> Vec<&str> {
    writes.iter().map(|(r, _)| r.as_str()).collect()
}

/// The wave a kind is applied in: what pods read or reach, the workloads, their autoscalers.
fn wave(resource: &str) -> u8 {
    match resource {
        "secrets"
        | "configmaps"
        | "persistentvolumeclaims"
        | "services"
        | "networkpolicies"
        | "serviceaccounts"
        | "roles"
        | "rolebindings" => 1,
        "statefulsets" | "deployments" => 2,
        "horizontalpodautoscalers" => 3,
        other => panic!("not a child kind: {other}"),
    }
}

#[tokio::test]
async fn a_first_apply_writes_what_pods_read_before_the_pods() {
    let f = Fixture::new();
    let applied = f.apply("{}").await;
    let writes = f.take_writes();
    let waves: Vec<u8> = writes.iter().map(|(r, _)| wave(r)).collect();
    assert!(
        waves.is_sorted(),
        "configuration before workloads before autoscalers: {writes:?}"
    );
    let mut kinds = resources(&writes);
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "configmaps",
            "configmaps",
            "configmaps",
            "configmaps",
            "configmaps",
            "deployments",
            "deployments",
            "deployments",
            "deployments",
            "horizontalpodautoscalers",
            "horizontalpodautoscalers",
            "networkpolicies",
            "networkpolicies",
            "networkpolicies",
            "networkpolicies",
            "networkpolicies",
            "networkpolicies",
            "networkpolicies",
            "networkpolicies",
            "persistentvolumeclaims",
            "rolebindings",
            "roles",
            "secrets",
            "secrets",
            "serviceaccounts",
            "services",
            "services",
            "services",
            "services",
            "statefulsets",
        ]
    );
    assert_eq!(applied.writes as usize, writes.len());
    assert!(applied.deleted.is_empty());
    assert_eq!(applied.deployments.len(), 4);
}

#[tokio::test]
async fn applying_the_same_objects_again_writes_nothing() {
    let f = Fixture::new();
    f.apply("{}").await;
    f.take_writes();
    let applied = f.apply("{}").await;
    assert_eq!(f.take_writes(), Vec::<(String, String)>::new());
    assert_eq!(applied.writes, 0);
}

#[tokio::test]
async fn a_hand_edited_child_is_repaired_and_nothing_else_is_written() {
    let f = Fixture::new();
    f.apply("{}").await;
    f.take_writes();
    let coap = path("apps/v1", "deployments", "lab-coap-server");
    let mut edited = f.api.get(&coap).expect("applied");
    edited["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "BATCH_SIZE", "value": "7"}]);
    f.api.put(&coap, edited);

    f.apply("{}").await;
    assert_eq!(
        f.take_writes(),
        [("deployments".to_owned(), "lab-coap-server".to_owned())]
    );
    let repaired = f.api.get(&coap).expect("still there");
    let env = &repaired["spec"]["template"]["spec"]["containers"][0]["env"];
    let batch = env
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "BATCH_SIZE");
    assert_eq!(batch.map(|e| e["value"].clone()), Some(json!("1000")));
}

#[tokio::test]
async fn a_deleted_child_is_created_again() {
    let f = Fixture::new();
    f.apply("{}").await;
    f.take_writes();
    f.api.remove(&path("v1", "services", "lab-grafana"));
    f.apply("{}").await;
    assert_eq!(
        f.take_writes(),
        [("services".to_owned(), "lab-grafana".to_owned())]
    );
}

/// A Deployment carrying our labels, owned by `owner_uid`.
fn stray_deployment(name: &str, owner_uid: &str, controller: bool) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "iot",
            "labels": {
                "app.kubernetes.io/managed-by": "iot-operator",
                "app.kubernetes.io/instance": "lab",
            },
            "ownerReferences": [{
                "apiVersion": "iot.operator.dev/v1alpha1",
                "kind": "IotMonitor",
                "name": "lab",
                "uid": owner_uid,
                "controller": controller,
            }],
        },
        "spec": {"selector": {}, "template": {}},
    })
}

#[tokio::test]
async fn only_our_own_unwanted_children_are_deleted_autoscalers_first() {
    let f = Fixture::new();
    f.apply("{}").await;
    let others = [
        (
            "another-monitors",
            stray_deployment("another-monitors", "other-uid", true),
        ),
        (
            "not-controlled",
            stray_deployment("not-controlled", "0000-uid", false),
        ),
    ];
    for (name, object) in &others {
        f.api
            .put(&path("apps/v1", "deployments", name), object.clone());
    }
    f.take_writes();

    let applied = f
        .apply("{simulator: {enabled: false}, autoscaling: {enabled: false}}")
        .await;
    let deletes: Vec<_> = f
        .api
        .calls()
        .into_iter()
        .filter(|c| c.method == http::Method::DELETE)
        .map(|c| c.target())
        .collect();
    assert_eq!(
        resources(&deletes),
        [
            "horizontalpodautoscalers",
            "horizontalpodautoscalers",
            "deployments",
            "networkpolicies"
        ]
    );
    let mut deleted = applied.deleted.clone();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "Deployment/lab-sensor-sim",
            "HorizontalPodAutoscaler/lab-coap-server",
            "HorizontalPodAutoscaler/lab-grafana",
            "NetworkPolicy/lab-sensor-sim",
        ]
    );
    for (name, _) in &others {
        assert!(
            f.api.get(&path("apps/v1", "deployments", name)).is_some(),
            "{name} is not ours to delete"
        );
    }
}

#[tokio::test]
async fn existing_credentials_are_kept_and_only_missing_keys_added() {
    let f = Fixture::new();
    let secret = path("v1", "secrets", "lab-credentials");
    f.api.put(
        &secret,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "lab-credentials", "namespace": "iot"},
            // "old" in base64
            "data": {"grafana-admin-password": "b2xk"},
        }),
    );
    f.apply("{}").await;
    let stored = f.api.get(&secret).expect("secret");
    assert_eq!(stored["data"]["grafana-admin-password"], "b2xk");
    assert!(stored["data"]["influxdb-admin-password"].is_string());
    let secret_writes: Vec<_> = f
        .api
        .calls()
        .into_iter()
        .filter(|c| c.is_write() && c.target() == ("secrets".into(), "lab-credentials".into()))
        .collect();
    assert_eq!(secret_writes.len(), 1);
    assert_eq!(secret_writes[0].method, http::Method::PATCH);
    // A merge patch, not an apply: nobody takes ownership of values the user may have set.
    assert!(!secret_writes[0].query.contains("fieldManager"));
}

#[tokio::test]
async fn a_no_op_with_a_synced_cache_sends_no_request_at_all() {
    let mut f = Fixture::new();
    f.apply("{}").await;
    f.sync_cache();
    f.api.clear_calls();
    let applied = f.apply("{}").await;
    assert_eq!(f.api.calls(), Vec::new(), "no read, no list, no write");
    assert_eq!(applied.writes, 0);
    assert_eq!(
        applied.deployments.len(),
        4,
        "the status still sees every Deployment"
    );
}

#[tokio::test]
async fn a_cached_version_nobody_checked_is_read_once_then_trusted() {
    let mut f = Fixture::new();
    f.apply("{}").await;
    // Another controller's status write: a new resourceVersion, the same spec.
    let grafana = path("apps/v1", "deployments", "lab-grafana");
    let mut updated = f.api.get(&grafana).expect("applied");
    updated["status"] = json!({"readyReplicas": 1});
    f.api.put(&grafana, updated);
    f.sync_cache();
    f.api.clear_calls();

    let applied = f.apply("{}").await;
    let calls: Vec<_> = f
        .api
        .calls()
        .iter()
        .map(|c| (c.method.clone(), c.target()))
        .collect();
    assert_eq!(
        calls,
        [(
            http::Method::GET,
            ("deployments".to_owned(), "lab-grafana".to_owned())
        )]
    );
    let status = applied
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("lab-grafana"));
    assert_eq!(
        status.and_then(|d| d.status.as_ref()?.ready_replicas),
        Some(1)
    );
    f.api.clear_calls();
    f.apply("{}").await;
    assert_eq!(f.api.calls(), Vec::new(), "that version is known now");
}

#[tokio::test]
async fn drift_seen_in_the_cache_is_read_and_repaired() {
    let mut f = Fixture::new();
    f.apply("{}").await;
    let coap = path("apps/v1", "deployments", "lab-coap-server");
    let mut edited = f.api.get(&coap).expect("applied");
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("someone/else:1");
    f.api.put(&coap, edited);
    f.sync_cache();
    f.take_writes();

    f.apply("{}").await;
    assert_eq!(
        f.take_writes(),
        [("deployments".to_owned(), "lab-coap-server".to_owned())]
    );
    let repaired = f.api.get(&coap).expect("still there");
    assert_ne!(
        repaired["spec"]["template"]["spec"]["containers"][0]["image"],
        json!("someone/else:1")
    );
}

#[tokio::test]
async fn a_deleted_child_is_created_again_once_the_cache_has_seen_the_deletion() {
    let mut f = Fixture::new();
    f.apply("{}").await;
    f.sync_cache();
    let grafana = path("v1", "services", "lab-grafana");
    f.api.remove(&grafana);
    f.take_writes();
    // The watch delivers the deletion after its store dropped the object, and only that
    // wakes the owner; a reconcile before it trusts the stale copy.
    f.apply("{}").await;
    assert_eq!(f.take_writes(), Vec::<(String, String)>::new());
    f.sync_cache();
    f.apply("{}").await;
    assert_eq!(
        f.take_writes(),
        [("services".to_owned(), "lab-grafana".to_owned())]
    );
    assert!(f.api.get(&grafana).is_some());
}

#[tokio::test]
async fn unwanted_children_are_found_in_the_cache() {
    let mut f = Fixture::new();
    f.apply("{}").await;
    f.sync_cache();
    f.api.clear_calls();
    f.apply("{simulator: {enabled: false}}").await;
    let lists = f
        .api
        .calls()
        .into_iter()
        .filter(|c| c.method == http::Method::GET && c.target().1.is_empty())
        .count();
    assert_eq!(lists, 0, "no LIST with a synced cache");
    assert!(
        f.api
            .get(&path("apps/v1", "deployments", "lab-sensor-sim"))
            .is_none()
    );
}

#[tokio::test]
async fn a_rollouts_status_writes_need_no_read_while_the_generation_holds() {
    let mut f = Fixture::new();
    f.apply("{}").await;
    let grafana = path("apps/v1", "deployments", "lab-grafana");
    // As the API server does: a generation, raised by spec changes only.
    let mut object = f.api.get(&grafana).expect("applied");
    object["metadata"]["generation"] = json!(1);
    f.api.put(&grafana, object.clone());
    f.sync_cache();
    f.apply("{}").await; // reads it once, and knows generation 1 now
    f.api.clear_calls();

    object["status"] = json!({"observedGeneration": 1, "readyReplicas": 1});
    f.api.put(&grafana, object.clone());
    f.sync_cache();
    f.apply("{}").await;
    assert_eq!(f.api.calls(), Vec::new(), "a status write changes no spec");

    object["metadata"]["generation"] = json!(2);
    object["spec"]["template"]["spec"]["containers"][0]["image"] = json!("someone/else:1");
    f.api.put(&grafana, object.clone());
    f.sync_cache();
    f.apply("{}").await;
    assert_eq!(
        f.take_writes(),
        [("deployments".to_owned(), "lab-grafana".to_owned())],
        "a new generation is read and repaired"
    );

    // A label edited away keeps the generation, and is seen in the cached metadata.
    let mut object = f.api.get(&grafana).expect("repaired");
    object["metadata"]["generation"] = json!(3);
    f.api.put(&grafana, object.clone());
    f.sync_cache();
    f.apply("{}").await;
    f.api.clear_calls();
    object = f.api.get(&grafana).expect("still there");
    object["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("app.kubernetes.io/part-of");
    f.api.put(&grafana, object);
    f.sync_cache();
    f.apply("{}").await;
    assert_eq!(
        f.take_writes(),
        [("deployments".to_owned(), "lab-grafana".to_owned())]
    );
}

/// The children of `spec: {}`.
const CHILDREN: usize = 30;

fn reads(api: &MockApi) -> Vec<(String, String)> {
    api.calls()
        .into_iter()
        .filter(|c| !c.is_write())
        .map(|c| c.target())
        .collect()
}

#[tokio::test]
async fn a_first_apply_with_a_synced_cache_creates_without_reading() {
    let mut f = Fixture::new();
    f.sync_cache(); // the watches have listed: nothing of this monitor exists
    let applied = f.apply("{}").await;
    assert_eq!(reads(&f.api), Vec::new(), "no GET before a create");
    assert_eq!(f.take_writes().len(), CHILDREN);
    assert_eq!(applied.writes as usize, CHILDREN);
}

#[tokio::test]
async fn what_we_created_is_read_not_created_again_while_the_watch_lags() {
    let mut f = Fixture::new();
    f.sync_cache();
    f.apply("{}").await;
    f.take_writes();
    // The cache has not seen the new children yet: the memo knows we wrote them.
    let applied = f.apply("{}").await;
    assert_eq!(reads(&f.api).len(), CHILDREN, "each child read once");
    assert_eq!(f.take_writes(), Vec::<(String, String)>::new());
    assert_eq!(applied.writes, 0);
}

#[tokio::test]
async fn an_hpa_s_status_writes_are_judged_from_the_cache() {
    let mut f = Fixture::new();
    f.apply("{}").await;
    let hpa = path(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "lab-coap-server",
    );
    let mut object = f.api.get(&hpa).expect("applied");
    // The HPA controller's sync: a new resourceVersion, the same spec.
    object["status"] = json!({"currentReplicas": 1, "desiredReplicas": 2});
    f.api.put(&hpa, object.clone());
    f.sync_cache();
    f.api.clear_calls();
    f.apply("{}").await;
    assert_eq!(f.api.calls(), Vec::new(), "no read for a status write");

    // An edit of the spec is seen in the cached copy, read and repaired.
    object["spec"]["maxReplicas"] = json!(50);
    f.api.put(&hpa, object);
    f.sync_cache();
    f.apply("{}").await;
    assert_eq!(
        f.take_writes(),
        [(
            "horizontalpodautoscalers".to_owned(),
            "lab-coap-server".to_owned()
        )]
    );
    let repaired = f.api.get(&hpa).expect("still there");
    assert_ne!(repaired["spec"]["maxReplicas"], json!(50));
}

#[tokio::test]
async fn a_child_the_watch_saw_deleted_is_created_again_without_a_read() {
    let mut f = Fixture::new();
    f.sync_cache();
    f.apply("{}").await;
    f.sync_cache();
    let known = f.memo.len();
    let service = path("v1", "services", "lab-influxdb");
    let gone = f.api.remove(&service).expect("applied");
    f.sync_cache();
    let gone: Service = serde_json::from_value(gone).expect("a Service");
    // As the Service watch passes the deletion on.
    Feed::<Service>::new(&mut ChildCache::default(), f.memo.clone())
        .take(kube::runtime::watcher::Event::Delete(gone));
    assert_eq!(
        f.memo.len(),
        known - 1,
        "its entry is gone, the others stay"
    );
    f.api.clear_calls();
    f.apply("{}").await;
    assert_eq!(reads(&f.api), Vec::new(), "nothing to read: it is gone");
    assert_eq!(
        f.take_writes(),
        [("services".to_owned(), "lab-influxdb".to_owned())]
    );
}
