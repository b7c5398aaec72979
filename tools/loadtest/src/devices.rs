//! The load's devices over DTLS: `load-1..N` are added to the monitor's `spec.coap.devices`
//! for the run, the command waits until the operator has put their keys in the Secret
//! `<monitor>-devices`, and removes them again at the end.
//!
//! Both changes are server-side applies under a field manager of the command's own
//! ([`FIELD_MANAGER`]). `spec.coap.devices` is a list keyed by `name`, so the apply owns only
//! the entries it names: the user's own devices are neither touched nor needed in the patch.
//! The removal applies an object that names no field at all: the API server then drops what
//! only this manager owned (an entry the user lists too stays, theirs). That leaves the monitor
//! as it was, and, unlike applying an empty list, owns no `devices` field afterwards.
//! Patches and checks are pure functions; the three calls are at the end.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use iot_operator::crd::IotMonitor;

/// The field manager of the load's devices in the IotMonitor.
pub const FIELD_MANAGER: &str = "iot-loadtest";
/// The place the server stores the load's readings under.
pub const PLACE: &str = "loadtest";
/// How long the operator may take to give the devices their keys.
pub const KEYS_WAIT: Duration = Duration::from_secs(120);
/// How often the wait says where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The load's devices: `load-1..count`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadDevices {
    /// The IotMonitor's name.
    pub monitor: String,
    /// The Secret the operator keeps the monitor's devices' keys in (device name → key).
    pub secret: String,
    /// `load-1`, `load-2`, ...
    pub names: Vec<String>,
}

impl LoadDevices {
    /// Devices `load-1..count` of `monitor`, whose keys the operator keeps in `secret`.
    pub fn new(monitor: &str, secret: &str, count: u32) -> Self {
        LoadDevices {
            monitor: monitor.to_owned(),
            secret: secret.to_owned(),
            names: (1..=count).map(|i| format!("load-{i}")).collect(),
        }
    }

    /// The apply that puts the devices in `spec.coap.devices` (pure).
    pub fn add_patch(&self) -> Value {
        let devices: Vec<Value> = self
            .names
            .iter()
            .map(|name| json!({"name": name, "place": PLACE}))
            .collect();
        let mut patch = self.release_patch();
        patch["spec"] = json!({"coap": {"devices": devices}});
        patch
    }

    /// The apply that takes them out again: the object with no field of this manager (pure).
    pub fn release_patch(&self) -> Value {
        json!({
            "apiVersion": IotMonitor::api_version(&()),
            "kind": IotMonitor::kind(&()),
            "metadata": {"name": self.monitor},
        })
    }

    /// The devices whose key `secret` does not hold yet (pure).
    pub fn without_keys<'a>(&'a self, secret: Option<&Secret>) -> Vec<&'a str> {
        let data = secret.and_then(|s| s.data.as_ref());
        self.names
            .iter()
            .filter(|name| {
                data.and_then(|d| d.get(*name))
                    .is_none_or(|key| key.0.is_empty())
            })
            .map(String::as_str)
            .collect()
    }
}

/// Why the load's devices could not be put in place or taken out again.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// The apply that adds them was refused.
    #[error(
        "cannot add the load's devices to IotMonitor {monitor}'s spec.coap.devices: {source} (a \
         conflict means the monitor lists a device of the same name with another place; a field \
         not allowed, an operator without devices)"
    )]
    Add {
        /// The IotMonitor.
        monitor: String,
        /// What the API server answered.
        #[source]
        source: kube::Error,
    },
    /// The apply that removes them was refused.
    #[error("cannot remove the load's devices from IotMonitor {monitor}: {source}")]
    Remove {
        /// The IotMonitor.
        monitor: String,
        /// What the API server answered.
        #[source]
        source: kube::Error,
    },
    /// The operator did not give every device its key in time.
    #[error(
        "the Secret {secret} still lacks the keys of {missing} of the {of} load devices after \
         {waited:?} (first: {first}): is the operator running, and does it keep devices' keys?"
    )]
    NoKeys {
        /// The Secret `<monitor>-devices`.
        secret: String,
        /// Devices without a key.
        missing: usize,
        /// Devices in all.
        of: usize,
        /// The first device without a key.
        first: String,
        /// How long the command waited.
        waited: Duration,
    },
    /// Ctrl-C during the wait.
    #[error("interrupted while waiting for the load devices' keys")]
    Interrupted,
}

fn monitors(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    // Untyped: the command needs no more of the IotMonitor type than its name and kind.
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<IotMonitor>(&()),
    )
}

/// Server-side apply as [`FIELD_MANAGER`], not forced: a conflict with another manager's entry
/// is an error, not a take-over.
fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER)
}

/// Applies `patch` to the monitor with [`apply_params`].
async fn apply(
    client: &kube::Client,
    namespace: &str,
    monitor: &str,
    patch: Value,
) -> Result<(), kube::Error> {
    monitors(client, namespace)
        .patch(monitor, &apply_params(), &Patch::Apply(patch))
        .await
        .map(drop)
}

/// Adds the devices to the monitor.
pub async fn add(
    client: &kube::Client,
    namespace: &str,
    devices: &LoadDevices,
) -> Result<(), DevicesError> {
    let monitor = devices.monitor.clone();
    apply(client, namespace, &monitor, devices.add_patch())
        .await
        .map_err(|source| DevicesError::Add { monitor, source })?;
    tracing::info!(monitor = %devices.monitor, devices = devices.names.len(), field_manager = FIELD_MANAGER, "load devices added to spec.coap.devices");
    Ok(())
}

/// Removes the devices from the monitor (those only this command's manager owns).
pub async fn remove(
    client: &kube::Client,
    namespace: &str,
    devices: &LoadDevices,
) -> Result<(), DevicesError> {
    let monitor = devices.monitor.clone();
    apply(client, namespace, &monitor, devices.release_patch())
        .await
        .map_err(|source| DevicesError::Remove { monitor, source })?;
    tracing::info!(monitor = %devices.monitor, "load devices removed from spec.coap.devices");
    Ok(())
}

/// Waits, at most [`KEYS_WAIT`], until the Secret holds every device's key, saying every
/// [`PROGRESS_EVERY`] how many it has.
pub async fn wait_for_keys(
    client: &kube::Client,
    namespace: &str,
    devices: &LoadDevices,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DevicesError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = devices.secret.clone();
    let started = Instant::now();
    let mut said = started;
    loop {
        // A read that fails (not there yet, a hiccup) is one more turn of the wait.
        let current = secrets.get_opt(&secret).await.ok().flatten();
        let missing = devices.without_keys(current.as_ref());
        if missing.is_empty() {
            tracing::info!(%secret, devices = devices.names.len(), waited = ?started.elapsed(), "the load devices have their keys");
            return Ok(());
        }
        if started.elapsed() >= KEYS_WAIT {
            return Err(DevicesError::NoKeys {
                secret,
                missing: missing.len(),
                of: devices.names.len(),
                first: missing[0].to_owned(),
                waited: started.elapsed(),
            });
        }
        if said.elapsed() >= PROGRESS_EVERY {
            let have = devices.names.len() - missing.len();
            tracing::info!(%secret, have, of = devices.names.len(), "waiting for the load devices' keys");
            said = Instant::now();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return Err(DevicesError::Interrupted),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn the_add_patch_names_only_the_load_devices_as_an_iot_monitor() {
        let patch = LoadDevices::new("lab", "lab-devices", 3).add_patch();
        let expected = json!({
            "apiVersion": "iot.operator.dev/v1alpha1",
            "kind": "IotMonitor",
            "metadata": {"name": "lab"},
            "spec": {"coap": {"devices": [
                {"name": "load-1", "place": "loadtest"},
                {"name": "load-2", "place": "loadtest"},
                {"name": "load-3", "place": "loadtest"},
            ]}},
        });
        assert_eq!(patch, expected);
    }

    #[test]
    fn the_release_patch_owns_no_field() {
        let patch = LoadDevices::new("lab", "lab-devices", 3).release_patch();
        assert!(patch.get("spec").is_none(), "{patch}");
        assert_eq!(patch["metadata"], json!({"name": "lab"}));
        assert_eq!(patch["kind"], "IotMonitor");
    }

    #[test]
    fn both_are_applied_under_the_commands_own_field_manager_unforced() {
        let params = apply_params();
        assert_eq!(params.field_manager.as_deref(), Some("iot-loadtest"));
        assert!(!params.force);
    }

    #[test]
    fn devices_without_a_key_are_those_the_secret_lacks_or_holds_empty() {
        let devices = LoadDevices::new("lab", "lab-devices", 3);
        assert_eq!(devices.without_keys(None).len(), 3);
        let key = |k: &str| ByteString(k.as_bytes().to_vec());
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("load-1".to_owned(), key("0123456789abcdef")),
                ("load-3".to_owned(), key("")),
                ("sim-1".to_owned(), key("0123456789abcdef")),
            ])),
            ..Secret::default()
        };
        assert_eq!(devices.without_keys(Some(&secret)), ["load-2", "load-3"]);
    }
}
