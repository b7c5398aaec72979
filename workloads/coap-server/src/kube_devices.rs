//! The registry in a cluster: the operator keeps a Secret (device name → key) and a ConfigMap
//! (device name → place) of the same name beside the server. Both are watched through the API
//! server, so a device added, re-keyed or removed takes effect within a second or two, without a
//! restart; a mounted volume would take up to the kubelet's sync period (a minute or more).
//! The pod may read those two objects only (a Role with their names).

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::devices::{Devices, from_maps};

/// The cluster cannot be reached to follow the registry.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Kubernetes API to read the device registry: {0}")]
pub struct KubeError(#[from] kube::Error);

/// What the two objects hold now.
#[derive(Default)]
struct Sources {
    keys: HashMap<String, Vec<u8>>,
    places: HashMap<String, String>,
}

impl Sources {
    fn publish(&self, devices: &Devices) {
        let keys = self.keys.iter().map(|(n, k)| (n.as_str(), k.as_slice()));
        let (registry, problems) = from_maps(keys, &self.places);
        for p in &problems {
            tracing::warn!(problem = %p, "device left out of the registry");
        }
        tracing::info!(devices = registry.len(), "device registry updated");
        devices.replace(registry);
    }
}

/// Follows the Secret and the ConfigMap called `name` in the pod's namespace (`namespace`, or
/// the service account's) into `devices`, until the process ends. Watch errors are retried with
/// back-off by the watcher; the last registry stays in place meanwhile.
pub async fn follow_kube(
    name: String,
    namespace: Option<String>,
    devices: Devices,
) -> Result<(), KubeError> {
    let client = kube::Client::try_default().await?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let secrets = watcher(
        Api::<Secret>::namespaced(client.clone(), &namespace),
        config.clone(),
    )
    .map(|e| e.map(Change::Keys));
    let maps = watcher(Api::<ConfigMap>::namespaced(client, &namespace), config)
        .default_backoff()
        .map(|e| e.map(Change::Places));
    let mut changes = std::pin::pin!(futures::stream::select(secrets, maps));
    let mut sources = Sources::default();
    tracing::info!(%namespace, %name, "following the device registry");
    while let Some(change) = changes.next().await {
        match change {
            Ok(change) => {
                if sources.apply(change) {
                    sources.publish(&devices);
                }
            }
            Err(e) => tracing::warn!(error = %e, "device registry watch failed; retrying"),
        }
    }
    Ok(())
}

enum Change {
    Keys(watcher::Event<Secret>),
    Places(watcher::Event<ConfigMap>),
}

impl Sources {
    /// Takes one watch event; whether the registry should be published again.
    fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Keys(event) => update(&mut self.keys, event, secret_keys),
            Change::Places(event) => update(&mut self.places, event, |m: ConfigMap| {
                m.data.unwrap_or_default().into_iter().collect()
            }),
        }
    }
}

/// Takes one watch event of one object into `map`, its content; whether to publish. A relist
/// starts empty (an object deleted meanwhile sends no event) and publishes once, at its end.
fn update<K, V>(
    map: &mut HashMap<String, V>,
    event: watcher::Event<K>,
    content: impl FnOnce(K) -> HashMap<String, V>,
) -> bool {
    use watcher::Event;
    match event {
        Event::Apply(object) => {
            *map = content(object);
            true
        }
        Event::InitApply(object) => {
            *map = content(object);
            false
        }
        Event::Delete(_) => {
            map.clear();
            true
        }
        Event::Init => {
            map.clear();
            false
        }
        Event::InitDone => true,
    }
}

fn secret_keys(secret: Secret) -> HashMap<String, Vec<u8>> {
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(name, key)| (name, key.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use watcher::Event;

    const KEY: &[u8] = b"0123456789abcdef0123";

    fn secret(names: &[&str]) -> Secret {
        Secret {
            data: Some(
                names
                    .iter()
                    .map(|n| (n.to_string(), ByteString(KEY.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn places(names: &[&str]) -> ConfigMap {
        ConfigMap {
            data: Some(
                names
                    .iter()
                    .map(|n| (n.to_string(), "kitchen".to_string()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn registered(sources: &Sources) -> usize {
        let devices = Devices::default();
        sources.publish(&devices);
        devices.current().len()
    }

    #[test]
    fn a_relist_publishes_once_at_its_end_and_forgets_what_is_gone() {
        let mut s = Sources::default();
        assert!(!s.apply(Change::Keys(Event::Init)));
        assert!(!s.apply(Change::Keys(Event::InitApply(secret(&["a", "b"])))));
        assert!(s.apply(Change::Keys(Event::InitDone)));
        assert!(!s.apply(Change::Places(Event::InitApply(places(&["a", "b"])))));
        assert!(s.apply(Change::Places(Event::InitDone)));
        assert_eq!(registered(&s), 2);
        // A device removed from both.
        assert!(s.apply(Change::Keys(Event::Apply(secret(&["a"])))));
        assert_eq!(registered(&s), 1);
        // The Secret deleted while the watch was down: the relist has no object.
        assert!(!s.apply(Change::Keys(Event::Init)));
        assert!(s.apply(Change::Keys(Event::InitDone)));
        assert_eq!(registered(&s), 0);
    }
}
