//! The device registry coap-server follows (`--devices-from`): a Secret of pre-shared keys
//! (device name → key) and a ConfigMap of places (device name → place), both called
//! `<monitor>-devices`, holding the user's devices and the simulator's sensors.
//!
//! Keys are generated like the credentials (`secrets`): created once, never regenerated, so
//! the Secret is not server-side applied. The apply step writes only what [`KeyChanges`] says:
//! a key for each device that has none (a new device, or one whose key was deleted: a
//! rotation), and the removal of keys of devices no longer listed (a revocation). Unlike the
//! credentials, the Secret dies with the monitor: its keys open no data that outlives it, and
//! a device registered again under a new monitor is given its new key like any new device.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::{Value, json};

use super::labels::{Component, owned_meta};
use crate::controller::validate::ValidatedMonitor;

/// Length of a generated key: 32 of `[A-Za-z0-9]`, about 190 bits. Printable, so what
/// `kubectl get secret ... | base64 -d` prints is what a device is configured with (its bytes
/// are the key), and within the 16 to 64 bytes coap-server takes.
const KEY_LEN: usize = 32;

/// A key from the operating system's CSPRNG.
pub fn random_key() -> String {
    iot_common::random::alphanumeric(KEY_LEN)
}

/// The registry one monitor should have.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRegistry {
    /// Metadata of the Secret of keys (name, labels, owner reference).
    pub keys: Secret,
    /// The devices the Secret holds a key for, and nothing else.
    pub names: BTreeSet<String>,
    /// The ConfigMap of places, applied like any other child.
    pub places: ConfigMap,
}

/// A generated key; its `Debug` shows no key, so no log line can carry one.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(String);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// What to change in the Secret of keys so that it holds a key for exactly the wanted devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    /// New keys, by device name.
    pub added: BTreeMap<String, Key>,
    /// Devices no longer wanted, whose keys go.
    pub removed: BTreeSet<String>,
}

impl KeyChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// The merge patch that makes these changes to the Secret at `resource_version`, and
    /// fails (409) if someone else changed it since it was read: a key written meanwhile is
    /// never overwritten. Removed keys are `null` in `data`; added ones go in `stringData`.
    pub fn merge_patch(&self, resource_version: &str) -> Value {
        let removed: serde_json::Map<String, Value> = self
            .removed
            .iter()
            .map(|name| (name.clone(), Value::Null))
            .collect();
        json!({
            "metadata": {"resourceVersion": resource_version},
            "data": removed,
            "stringData": self.string_data(),
        })
    }

    fn string_data(&self) -> BTreeMap<String, String> {
        self.added
            .iter()
            .map(|(name, Key(key))| (name.clone(), key.clone()))
            .collect()
    }

    /// The added devices that held a key before (`registered`, the devices of the places the
    /// registry had): their key was deleted, and the new one is a rotation.
    pub fn rotated(&self, registered: &BTreeSet<String>) -> Vec<String> {
        self.added
            .keys()
            .filter(|name| registered.contains(*name))
            .cloned()
            .collect()
    }
}

impl DeviceRegistry {
    /// What to change in a Secret whose data is `existing`: every existing key of a wanted
    /// device is kept, whatever its value (one written by hand is the user's choice); a wanted
    /// device without one gets `key()`; the others' keys go.
    pub fn changes(
        &self,
        existing: &BTreeMap<String, ByteString>,
        mut key: impl FnMut() -> String,
    ) -> KeyChanges {
        KeyChanges {
            added: self
                .names
                .iter()
                .filter(|name| !existing.contains_key(*name))
                .map(|name| (name.clone(), Key(key())))
                .collect(),
            removed: existing
                .keys()
                .filter(|name| !self.names.contains(*name))
                .cloned()
                .collect(),
        }
    }

    /// The Secret holds a key for exactly the wanted devices; its values are not looked at
    /// (the cache has none).
    pub fn is_held_by(&self, secret: &Secret) -> bool {
        let none = BTreeMap::new();
        let existing = secret.data.as_ref().unwrap_or(&none);
        existing.len() == self.names.len() && self.names.iter().all(|n| existing.contains_key(n))
    }

    /// The Secret for a first creation, holding the keys `changes` adds (to no Secret: a key
    /// for every device).
    pub fn new_secret(&self, changes: &KeyChanges) -> Secret {
        Secret {
            string_data: Some(changes.string_data()),
            type_: Some("Opaque".into()),
            ..self.keys.clone()
        }
    }
}

pub fn build(model: &ValidatedMonitor) -> DeviceRegistry {
    let name = &model.names.devices;
    let places: BTreeMap<String, String> = model
        .devices()
        .map(|d| (d.name.clone(), d.place.clone()))
        .collect();
    DeviceRegistry {
        keys: Secret {
            metadata: owned_meta(model, name, Component::Devices),
            ..Secret::default()
        },
        names: places.keys().cloned().collect(),
        places: ConfigMap {
            metadata: owned_meta(model, name, Component::Devices),
            data: Some(places),
            ..ConfigMap::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::model;

    fn registry(spec: &str) -> DeviceRegistry {
        build(&model(spec))
    }

    /// Secret data with a key `old-<name>` for each of `names`.
    fn existing(names: &[&str]) -> BTreeMap<String, ByteString> {
        names
            .iter()
            .map(|n| (n.to_string(), ByteString(format!("old-{n}").into_bytes())))
            .collect()
    }

    fn numbered() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("new{n}")
        }
    }

    const TWO: &str = "{coap: {devices: [{name: door, place: hall}, {name: oven, place: kitchen}]}, simulator: {enabled: false}}";

    #[test]
    fn the_secret_holds_a_key_for_every_device_and_the_simulators_sensors() {
        let r = registry(
            "{coap: {devices: [{name: door, place: hall}]}, simulator: {sensors: 2, places: [a, b]}}",
        );
        let secret = r.new_secret(&r.changes(&BTreeMap::new(), numbered()));
        let data = secret.string_data.expect("keys");
        assert_eq!(data.keys().collect::<Vec<_>>(), ["door", "sim-1", "sim-2"]);
        let distinct: BTreeSet<_> = data.values().collect();
        assert_eq!(distinct.len(), 3, "one key each");
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.metadata.name.as_deref(), Some("lab-devices"));
    }

    #[test]
    fn simulator_keys_are_there_only_with_the_simulator() {
        let off = registry("{simulator: {enabled: false}}");
        assert!(off.names.is_empty());
        let on = registry("{simulator: {sensors: 3}}");
        assert_eq!(
            on.names.iter().collect::<Vec<_>>(),
            ["sim-1", "sim-2", "sim-3"]
        );
    }

    #[test]
    fn existing_keys_are_kept_whatever_their_value() {
        let r = registry(TWO);
        let changes = r.changes(&existing(&["door", "oven"]), numbered());
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_new_device_gets_a_new_key_and_the_others_keep_theirs() {
        let r = registry(TWO);
        let changes = r.changes(&existing(&["door"]), numbered());
        assert_eq!(
            changes.added,
            BTreeMap::from([("oven".to_owned(), Key("new1".into()))])
        );
        assert!(changes.removed.is_empty());
    }

    #[test]
    fn a_deleted_key_is_written_again_as_a_rotation() {
        let r = registry(TWO);
        // oven's key was deleted from the Secret; oven is in the places the registry had.
        let changes = r.changes(&existing(&["door"]), numbered());
        let registered = BTreeSet::from(["door".to_owned(), "oven".to_owned()]);
        assert_eq!(changes.rotated(&registered), ["oven"]);
        // A device new to the registry is not a rotation.
        assert!(
            changes
                .rotated(&BTreeSet::from(["door".to_owned()]))
                .is_empty()
        );
    }

    #[test]
    fn a_removed_devices_key_goes() {
        let r =
            registry("{coap: {devices: [{name: door, place: hall}]}, simulator: {enabled: false}}");
        let changes = r.changes(&existing(&["door", "oven"]), numbered());
        assert!(changes.added.is_empty());
        assert_eq!(changes.removed, BTreeSet::from(["oven".to_owned()]));
    }

    #[test]
    fn the_merge_patch_adds_removes_and_holds_to_the_version_read() {
        let r = registry(TWO);
        let changes = r.changes(&existing(&["door", "gone"]), numbered());
        assert_eq!(
            changes.merge_patch("42"),
            json!({
                "metadata": {"resourceVersion": "42"},
                "data": {"gone": null},
                "stringData": {"oven": "new1"},
            })
        );
    }

    #[test]
    fn the_cached_key_names_tell_whether_the_secret_needs_a_write() {
        let r = registry(TWO);
        let secret = |names: &[&str]| Secret {
            data: Some(existing(names)),
            ..Secret::default()
        };
        assert!(r.is_held_by(&secret(&["door", "oven"])));
        assert!(!r.is_held_by(&secret(&["door"])));
        assert!(!r.is_held_by(&secret(&["door", "oven", "gone"])));
        assert!(!r.is_held_by(&Secret::default()));
    }

    #[test]
    fn keys_are_long_printable_and_never_shown_in_debug() {
        let key = random_key();
        assert_eq!(key.len(), 32);
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(key, random_key());
        let changes = registry(TWO).changes(&BTreeMap::new(), || key.clone());
        assert!(!format!("{changes:?}").contains(&key));
    }

    #[test]
    fn the_places_map_every_device_to_its_place() {
        let r = registry(
            "{coap: {devices: [{name: door, place: hall}]}, simulator: {sensors: 3, places: [a, b]}}",
        );
        let places = r.places.data.expect("places");
        assert_eq!(
            places,
            BTreeMap::from([
                ("door".to_owned(), "hall".to_owned()),
                ("sim-1".to_owned(), "a".to_owned()),
                ("sim-2".to_owned(), "b".to_owned()),
                ("sim-3".to_owned(), "a".to_owned()),
            ])
        );
        assert_eq!(r.places.metadata.name.as_deref(), Some("lab-devices"));
    }

    #[test]
    fn the_registry_dies_with_the_monitor() {
        let r = registry("{}");
        assert!(r.keys.metadata.owner_references.is_some());
        assert!(r.places.metadata.owner_references.is_some());
    }
}
