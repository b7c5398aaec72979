//! The device registry against the in-memory API server: keys never regenerated, a deleted
//! key written anew as a rotation, a removed device's key and place gone, and the order of the
//! writes coap-server relies on.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

const TWO: &str = "{coap: {devices: [{name: door, place: hall}, {name: oven, place: kitchen}]}, simulator: {sensors: 2}}";
const ONE: &str = "{coap: {devices: [{name: door, place: hall}]}, simulator: {sensors: 2}}";

fn keys_path() -> String {
    path("v1", "secrets", "lab-devices")
}

/// The stored keys, as the API server holds them (base64).
fn keys(f: &Fixture) -> BTreeMap<String, Value> {
    let secret = f.api.get(&keys_path()).expect("the devices Secret");
    serde_json::from_value(secret["data"].clone()).expect("data")
}

fn places(f: &Fixture) -> Vec<String> {
    let map = f
        .api
        .get(&path("v1", "configmaps", "lab-devices"))
        .expect("the devices ConfigMap");
    map["data"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

/// Deletes `name`'s key from the stored Secret, as `kubectl edit` would.
fn delete_key(f: &Fixture, name: &str) {
    let mut secret = f.api.get(&keys_path()).expect("the devices Secret");
    secret["data"].as_object_mut().expect("data").remove(name);
    f.api.put(&keys_path(), secret);
}

#[tokio::test]
async fn every_device_gets_a_key_and_a_place_keys_first() {
    let f = Fixture::new();
    let applied = f.apply(TWO).await;
    assert_eq!(
        keys(&f).keys().collect::<Vec<_>>(),
        ["door", "oven", "sim-1", "sim-2"]
    );
    assert_eq!(places(&f), ["door", "oven", "sim-1", "sim-2"]);
    assert_eq!(
        applied.device_keys,
        KeyEvents::default(),
        "new devices rotate nothing"
    );
    let writes = f.take_writes();
    let at = |target: (&str, &str)| {
        writes
            .iter()
            .position(|(r, n)| (r.as_str(), n.as_str()) == target)
            .unwrap_or_else(|| panic!("{target:?} not written: {writes:?}"))
    };
    // Both Secrets are created (POST to the collection: no name) before the places.
    let last_secret = writes.iter().rposition(|(r, _)| r == "secrets");
    assert!(
        last_secret < Some(at(("configmaps", "lab-devices"))),
        "{writes:?}"
    );
    assert!(at(("roles", "lab-coap-server")) < at(("rolebindings", "lab-coap-server")));
}

#[tokio::test]
async fn keys_are_never_regenerated() {
    let mut f = Fixture::new();
    f.apply(TWO).await;
    let before = keys(&f);
    f.take_writes();
    // Read from the API server, then from a synced cache: neither writes the Secret.
    f.apply(TWO).await;
    f.sync_cache();
    f.apply(TWO).await;
    assert_eq!(keys(&f), before);
    assert!(
        !f.take_writes().iter().any(|(r, _)| r == "secrets"),
        "the Secret was written again"
    );
}

#[tokio::test]
async fn a_deleted_key_is_written_anew_as_a_rotation_and_the_others_are_kept() {
    let mut f = Fixture::new();
    f.apply(TWO).await;
    let before = keys(&f);
    delete_key(&f, "oven");
    f.sync_cache();
    f.take_writes();

    let applied = f.apply(TWO).await;
    let after = keys(&f);
    assert_eq!(after.len(), 4);
    assert_ne!(after["oven"], before["oven"], "a new key");
    for name in ["door", "sim-1", "sim-2"] {
        assert_eq!(after[name], before[name], "{name} keeps its key");
    }
    assert_eq!(applied.device_keys.rotated, ["oven"]);
    assert!(applied.device_keys.revoked.is_empty());
    assert_eq!(
        f.take_writes(),
        [("secrets".to_owned(), "lab-devices".to_owned())],
        "only the Secret"
    );
}

#[tokio::test]
async fn a_removed_device_loses_its_key_and_its_place() {
    let mut f = Fixture::new();
    f.apply(TWO).await;
    let before = keys(&f);
    f.sync_cache();
    let applied = f.apply(ONE).await;
    let after = keys(&f);
    assert_eq!(after.keys().collect::<Vec<_>>(), ["door", "sim-1", "sim-2"]);
    assert_eq!(after["door"], before["door"]);
    assert_eq!(places(&f), ["door", "sim-1", "sim-2"]);
    assert_eq!(applied.device_keys.revoked, ["oven"]);
    assert!(applied.device_keys.rotated.is_empty());
}

#[tokio::test]
async fn a_new_device_is_not_a_rotation() {
    let mut f = Fixture::new();
    f.apply(ONE).await;
    f.sync_cache();
    let applied = f.apply(TWO).await;
    assert!(keys(&f).contains_key("oven"));
    assert_eq!(applied.device_keys, KeyEvents::default());
}

#[tokio::test]
async fn a_key_set_by_hand_is_the_users_and_kept() {
    let f = Fixture::new();
    f.api.put(
        &keys_path(),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "lab-devices", "namespace": "iot"},
            // "0123456789abcdef" in base64: the key burnt into the device.
            "data": {"door": "MDEyMzQ1Njc4OWFiY2RlZg=="},
        }),
    );
    f.apply(ONE).await;
    assert_eq!(keys(&f)["door"], "MDEyMzQ1Njc4OWFiY2RlZg==");
    assert_eq!(keys(&f).len(), 3);
}

#[tokio::test]
async fn the_simulators_keys_go_with_the_simulator() {
    let mut f = Fixture::new();
    f.apply(ONE).await;
    f.sync_cache();
    let applied = f
        .apply("{coap: {devices: [{name: door, place: hall}]}, simulator: {enabled: false}}")
        .await;
    assert_eq!(keys(&f).keys().collect::<Vec<_>>(), ["door"]);
    assert_eq!(applied.device_keys.revoked, ["sim-1", "sim-2"]);
}
