//! The reconcile driver without a cluster: `reconcile_monitor`, `reconcile` and
//! `error_policy` against the mock API server, one behaviour each.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fixtures::{MONITOR_PATH, context_with};
use super::mock_api::MockApi;
use super::*;

fn stored(api: &MockApi) -> IotMonitor {
    serde_json::from_value(api.get(MONITOR_PATH).expect("monitor stored")).expect("monitor")
}

fn condition(monitor: &IotMonitor, type_: &str) -> Condition {
    monitor
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn status_write() -> Vec<(String, String)> {
    vec![("iotmonitors/status".to_owned(), "lab".to_owned())]
}

#[tokio::test]
async fn a_paused_monitor_gets_its_status_and_nothing_else() {
    let (ctx, api, monitor) = context_with("{paused: true}");
    let action = reconcile_monitor(&monitor, &ctx).await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    assert_eq!(api.writes(), status_write());
    let progressing = condition(&stored(&api), status::PROGRESSING);
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "Paused")
    );
}

#[tokio::test]
async fn an_invalid_spec_writes_no_child_and_waits_for_the_user() {
    // A node port on a ClusterIP Service: the API server's CEL rule refuses it too, but the
    // operator must not trust that every client went through it.
    let (ctx, api, monitor) = context_with("{coap: {nodePort: 30683}}");
    let monitor = Arc::new(monitor);
    let error = reconcile(monitor.clone(), ctx.clone())
        .await
        .expect_err("invalid");
    assert_eq!(error.category(), "InvalidSpec");
    assert!(error.needs_user_action());
    assert!(
        api.writes()
            .iter()
            .all(|(resource, _)| resource == "iotmonitors/status" || resource == "events"),
        "{:?}",
        api.writes()
    );
    let degraded = condition(&stored(&api), status::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        degraded.message.contains("nodePort"),
        "{}",
        degraded.message
    );
    let action = error_policy(monitor, &error, ctx);
    assert_eq!(action, Action::requeue(context::MAX_BACKOFF));
}

#[tokio::test]
async fn an_apply_failure_backs_off_longer_each_time_until_a_success() {
    let (ctx, api, monitor) = context_with("{}");
    api.refuse_writes_to(Some("deployments"));
    let monitor = Arc::new(monitor);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let error = reconcile(monitor.clone(), ctx.clone())
            .await
            .expect_err("refused");
        assert_eq!(error.category(), "ApplyFailed");
        assert!(!error.needs_user_action());
        delays.push(error_policy(monitor.clone(), &error, ctx.clone()));
    }
    let secs = |s| Action::requeue(Duration::from_secs(s));
    assert_eq!(delays, [secs(5), secs(10), secs(20)]);
    let degraded = condition(&stored(&api), status::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ApplyFailed")
    );

    // The writes go through again: the next failure starts the backoff afresh.
    api.refuse_writes_to(None);
    reconcile(Arc::new(stored(&api)), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        condition(&stored(&api), status::DEGRADED).status,
        "False",
        "a success clears Degraded"
    );
    api.refuse_writes_to(Some("deployments"));
    // A changed spec (generation) makes the operator apply, and fail, again.
    let mut changed = stored(&api);
    changed.spec.coap.batch.size += 1;
    changed.metadata.generation = Some(2);
    let error = reconcile(Arc::new(changed.clone()), ctx.clone())
        .await
        .expect_err("refused again");
    assert_eq!(error_policy(Arc::new(changed), &error, ctx), secs(5));
}

#[tokio::test]
async fn a_status_only_change_writes_the_status_and_no_child() {
    let (ctx, api, monitor) = context_with("{}");
    reconcile_monitor(&monitor, &ctx)
        .await
        .expect("first reconcile");
    assert!(
        api.writes().len() > 10,
        "the first reconcile builds the stack"
    );

    // The world moves: InfluxDB's StatefulSet reports its replica ready.
    let path = "/apis/apps/v1/namespaces/iot/statefulsets/lab-influxdb";
    let mut influxdb = api.get(path).expect("StatefulSet applied");
    influxdb["status"] = json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1});
    api.put(path, influxdb);
    api.clear_calls();
    reconcile_monitor(&stored(&api), &ctx)
        .await
        .expect("second reconcile");
    assert_eq!(api.writes(), status_write());
    let status = stored(&api).status.expect("status");
    assert_eq!(
        status.components.influxdb.map(|c| c.ready_replicas),
        Some(1)
    );

    // Nothing moved since: nothing is written at all.
    api.clear_calls();
    reconcile_monitor(&stored(&api), &ctx)
        .await
        .expect("third reconcile");
    assert_eq!(api.writes(), Vec::<(String, String)>::new());
}

const DEVICES_PATH: &str = "/api/v1/namespaces/iot/secrets/lab-devices";
const WITH_DOOR: &str = "{coap: {devices: [{name: door, place: hall}]}}";

/// The stored device keys (base64), by device.
fn device_keys(api: &MockApi) -> std::collections::BTreeMap<String, serde_json::Value> {
    let secret = api.get(DEVICES_PATH).expect("the devices Secret");
    serde_json::from_value(secret["data"].clone()).expect("keys")
}

/// `(reason, note)` of every Event published so far.
fn events(api: &MockApi) -> Vec<(String, String)> {
    api.objects()
        .into_iter()
        .filter(|o| o["kind"] == "Event")
        .map(|e| {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            (text(&e["reason"]), text(&e["note"]))
        })
        .collect()
}

#[tokio::test]
async fn a_deleted_device_key_is_rotated_and_told_in_an_event() {
    let (ctx, api, monitor) = context_with(WITH_DOOR);
    reconcile_monitor(&monitor, &ctx)
        .await
        .expect("first reconcile");
    let before = device_keys(&api);
    assert_eq!(before.len(), 5, "door and the simulator's four");

    // `kubectl edit secret lab-devices`, door's key deleted.
    let mut secret = api.get(DEVICES_PATH).expect("stored");
    secret["data"].as_object_mut().expect("data").remove("door");
    api.put(DEVICES_PATH, secret);
    reconcile_monitor(&stored(&api), &ctx)
        .await
        .expect("second reconcile");

    let after = device_keys(&api);
    assert_ne!(after["door"], before["door"], "a new key");
    for name in ["sim-1", "sim-2", "sim-3", "sim-4"] {
        assert_eq!(after[name], before[name], "{name} keeps its key");
    }
    assert!(
        events(&api).contains(&(
            "DeviceKeyRotated".to_owned(),
            "key of device door rotated".to_owned()
        )),
        "{:?}",
        events(&api)
    );
    assert_eq!(stored(&api).status.and_then(|s| s.devices), Some(5));
}

#[tokio::test]
async fn device_keys_are_never_regenerated_by_later_reconciles() {
    let (ctx, api, monitor) = context_with(WITH_DOOR);
    reconcile_monitor(&monitor, &ctx)
        .await
        .expect("first reconcile");
    let before = device_keys(&api);

    // Nothing changed, then a spec change elsewhere, then one more device.
    reconcile_monitor(&stored(&api), &ctx).await.expect("again");
    let mut changed = stored(&api);
    changed.spec.coap.batch.size += 1;
    changed.metadata.generation = Some(2);
    reconcile_monitor(&changed, &ctx)
        .await
        .expect("a spec change");
    changed.spec.coap.devices.push(crate::crd::DeviceSpec {
        name: "oven".into(),
        place: "kitchen".into(),
    });
    changed.metadata.generation = Some(3);
    reconcile_monitor(&changed, &ctx)
        .await
        .expect("a new device");

    let after = device_keys(&api);
    assert!(after.contains_key("oven"));
    for (name, key) in &before {
        assert_eq!(&after[name], key, "{name}'s key was regenerated");
    }
    assert!(
        !events(&api)
            .iter()
            .any(|(reason, _)| reason == "DeviceKeyRotated"),
        "a new device is no rotation: {:?}",
        events(&api)
    );
}

#[tokio::test]
async fn a_device_removed_from_the_spec_is_revoked_and_told_in_an_event() {
    let (ctx, api, monitor) = context_with(WITH_DOOR);
    reconcile_monitor(&monitor, &ctx)
        .await
        .expect("first reconcile");
    let mut changed = stored(&api);
    changed.spec.coap.devices.clear();
    changed.metadata.generation = Some(2);
    reconcile_monitor(&changed, &ctx)
        .await
        .expect("door removed");

    assert!(!device_keys(&api).contains_key("door"));
    let places = api
        .get("/api/v1/namespaces/iot/configmaps/lab-devices")
        .expect("the devices ConfigMap");
    assert!(places["data"].get("door").is_none(), "{places}");
    assert!(
        events(&api).contains(&(
            "DevicesRevoked".to_owned(),
            "1 device(s) revoked, their keys removed: door".to_owned()
        )),
        "{:?}",
        events(&api)
    );
}

const EXTERNAL: &str = "{influxdb: {external: {url: 'http://influx.example:8086', credentialsSecret: ext}}, simulator: {enabled: false}}";
const EXTERNAL_SECRET_PATH: &str = "/api/v1/namespaces/iot/secrets/ext";

/// The user's Secret `ext` as stored: `labels` on it, and `keys` with the value `s3cret`.
fn external_secret(labels: Value, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), json!("czNjcmV0")))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ext", "namespace": "iot", "labels": labels},
        "data": data,
    })
}

/// Every object written so far that mentions the Secret `ext` by name (a pod template's env
/// from it, a copy), apart from the monitor and its status.
fn children_naming_ext(api: &MockApi) -> Vec<String> {
    api.objects()
        .iter()
        .filter(|o| o["kind"] != "IotMonitor" && o["metadata"]["name"] != "ext")
        .filter(|o| {
            let text = o.to_string();
            text.contains("\"name\":\"ext\"") || text.contains("czNjcmV0")
        })
        .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
        .collect()
}

#[tokio::test]
async fn a_secret_that_does_not_opt_in_reaches_no_pod_and_the_status_says_how_to_opt_in() {
    let (ctx, api, monitor) = context_with(EXTERNAL);
    api.put(
        EXTERNAL_SECRET_PATH,
        external_secret(json!({}), &["username", "password"]),
    );
    let monitor = Arc::new(monitor);
    let error = reconcile(monitor.clone(), ctx.clone())
        .await
        .expect_err("not opted in");
    assert_eq!(error.category(), "CredentialsNotAllowed");
    assert!(
        api.writes()
            .iter()
            .all(|(resource, _)| resource == "iotmonitors/status" || resource == "events"),
        "no child is written: {:?}",
        api.writes()
    );
    assert_eq!(children_naming_ext(&api), Vec::<String>::new());
    let degraded = condition(&stored(&api), status::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "CredentialsNotAllowed")
    );
    assert!(
        degraded.message.contains(
            "kubectl label secret ext -n iot iot.operator.dev/allow-external-influxdb=true"
        ),
        "{}",
        degraded.message
    );

    // Opted in but without the password: still no pod, and the status names the key.
    api.put(
        EXTERNAL_SECRET_PATH,
        external_secret(
            json!({"iot.operator.dev/allow-external-influxdb": "true"}),
            &["username"],
        ),
    );
    let error = reconcile(Arc::new(stored(&api)), ctx.clone())
        .await
        .expect_err("a key missing");
    assert_eq!(error.category(), "MissingCredentials");
    assert_eq!(children_naming_ext(&api), Vec::<String>::new());
    let degraded = condition(&stored(&api), status::DEGRADED);
    assert!(
        degraded.message.contains("no key \"password\""),
        "{}",
        degraded.message
    );

    // Both keys: the workloads read it (and the check above could have failed).
    api.put(
        EXTERNAL_SECRET_PATH,
        external_secret(
            json!({"iot.operator.dev/allow-external-influxdb": "true"}),
            &["username", "password"],
        ),
    );
    reconcile(Arc::new(stored(&api)), ctx)
        .await
        .expect("opted in with both keys");
    let naming = children_naming_ext(&api);
    assert!(
        naming.contains(&"\"Deployment\"/\"lab-coap-server\"".to_owned()),
        "{naming:?}"
    );
    assert!(
        !api.objects()
            .iter()
            .filter(|o| o["metadata"]["name"] != "ext")
            .any(|o| o.to_string().contains("czNjcmV0")),
        "the values are never copied"
    );
}

#[tokio::test]
async fn taking_the_opt_in_off_deletes_the_workloads_that_read_the_secret() {
    let (ctx, api, monitor) = context_with(EXTERNAL);
    let opted_in = json!({"iot.operator.dev/allow-external-influxdb": "true"});
    api.put(
        EXTERNAL_SECRET_PATH,
        external_secret(opted_in, &["username", "password"]),
    );
    reconcile(Arc::new(monitor), ctx.clone())
        .await
        .expect("opted in");
    let mut before = children_naming_ext(&api);
    before.sort();
    assert_eq!(
        before,
        [
            "\"Deployment\"/\"lab-aqi-ingestor\"",
            "\"Deployment\"/\"lab-coap-server\"",
            "\"Deployment\"/\"lab-grafana\""
        ],
        "the stack reads the Secret"
    );

    // The owner takes the label off: the readers go, the rest of the stack stays.
    api.put(
        EXTERNAL_SECRET_PATH,
        external_secret(json!({}), &["username", "password"]),
    );
    api.clear_calls();
    let error = reconcile(Arc::new(stored(&api)), ctx)
        .await
        .expect_err("no longer opted in");
    assert_eq!(error.category(), "CredentialsNotAllowed");
    assert_eq!(children_naming_ext(&api), Vec::<String>::new());
    let deleted: Vec<_> = api
        .calls()
        .into_iter()
        .filter(|c| c.method == http::Method::DELETE)
        .map(|c| c.target())
        .collect();
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert!(
        api.objects()
            .iter()
            .any(|o| o["kind"] == "Service" && o["metadata"]["name"] == "lab-grafana"),
        "only the workloads that read the Secret go"
    );
    assert!(
        api.writes()
            .iter()
            .any(|(resource, _)| resource == "events"),
        "an Event says what was deleted"
    );
}
