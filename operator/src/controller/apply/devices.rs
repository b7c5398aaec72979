//! The device registry: its Secret of keys is written as `desired::devices` says (created
//! once, keys added and removed, never regenerated), then its ConfigMap of places is applied
//! like any child. Keys before places: coap-server takes a device once it has both, so a new
//! device is never registered without its key being there first, and the ConfigMap still holds
//! the devices registered before while the keys are written (which tells a rotation from a new
//! device).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};

use super::{Applier, ApplyError};
use crate::controller::desired::devices::{DeviceRegistry, random_key};
use crate::controller::known_state::{MemoKey, Seen};

/// A write of the Secret that lost a race (someone changed it between our read and our write)
/// is read and tried again, this many times in all.
const KEY_WRITE_ATTEMPTS: u32 = 3;

/// What happened to the devices' keys in one reconcile, for its Events. Names only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyEvents {
    /// Devices whose key had been deleted and was written anew.
    pub(crate) rotated: Vec<String>,
    /// Devices no longer listed, whose keys were removed.
    pub(crate) revoked: Vec<String>,
}

impl Applier<'_> {
    /// Writes the keys, then applies the places; returns what happened to the keys and the
    /// name of the ConfigMap (so that it is not deleted as unwanted).
    pub(super) async fn apply_devices(
        &self,
        registry: &DeviceRegistry,
    ) -> Result<(KeyEvents, BTreeSet<String>), ApplyError> {
        let events = self.ensure_device_keys(registry).await?;
        let places = self
            .apply_each(std::slice::from_ref(&registry.places))
            .await?;
        Ok((events, places))
    }

    async fn ensure_device_keys(&self, registry: &DeviceRegistry) -> Result<KeyEvents, ApplyError> {
        let name = registry.keys.metadata.name.clone().unwrap_or_default();
        let key = MemoKey::child::<Secret>(self.namespace, &name);
        let mut existing = match self.cache.seen::<Secret>(self.namespace, &name) {
            // The cache holds the key names: the right ones need no read.
            Seen::Cached(cached) if registry.is_held_by(&cached) => {
                return Ok(KeyEvents::default());
            }
            // As for an applied child: never seen, never written, so created without a read.
            Seen::Absent if self.memo.get(key).is_none() => None,
            _ => self.read::<Secret>(&name).await?,
        };
        let mut attempt = 1;
        loop {
            let data = existing
                .as_ref()
                .and_then(|s| s.data.clone())
                .unwrap_or_default();
            let changes = registry.changes(&data, random_key);
            if existing.is_some() && changes.is_empty() {
                return Ok(KeyEvents::default());
            }
            // Read before the write, while the places still say who was registered.
            let registered = if changes.added.is_empty() {
                BTreeSet::new()
            } else {
                self.registered_devices(&registry.places).await?
            };
            let written = match &existing {
                None => self
                    .api::<Secret>()
                    .create(&PostParams::default(), &registry.new_secret(&changes))
                    .await
                    .map(|created| (created, "create")),
                Some(live) => {
                    let version = live
                        .metadata
                        .resource_version
                        .as_deref()
                        .unwrap_or_default();
                    self.api::<Secret>()
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(changes.merge_patch(version)),
                        )
                        .await
                        .map(|patched| (patched, "patch"))
                }
            };
            match written {
                Ok((secret, verb)) => {
                    tracing::info!(
                        name,
                        added = ?changes.added.keys().collect::<Vec<_>>(),
                        removed = ?changes.removed,
                        "wrote the device keys"
                    );
                    // Its values are never compared, so no hash (0): the memo only records
                    // that it exists (what is known absent but remembered is read).
                    self.memo.remember(key, 0, &secret.metadata);
                    self.metrics.record_write("Secret", verb);
                    self.count_write();
                    return Ok(KeyEvents {
                        rotated: changes.rotated(&registered),
                        revoked: changes.removed.into_iter().collect(),
                    });
                }
                // Created, or changed, between our read and our write: read it again, so that
                // a key written meanwhile is kept.
                Err(kube::Error::Api(status))
                    if status.code == 409 && attempt < KEY_WRITE_ATTEMPTS =>
                {
                    tracing::debug!(
                        name,
                        attempt,
                        "the device keys changed meanwhile; reading again"
                    );
                    attempt += 1;
                    existing = self.read::<Secret>(&name).await?;
                }
                Err(source) => {
                    return Err(ApplyError::Apply {
                        kind: "Secret",
                        name,
                        source,
                    });
                }
            }
        }
    }

    /// The devices the registry had: the keys of its ConfigMap of places, which is applied
    /// after the keys. Nothing to read when the cache knows there is none and we never wrote
    /// one (a first reconcile).
    async fn registered_devices(&self, places: &ConfigMap) -> Result<BTreeSet<String>, ApplyError> {
        let name = places.metadata.name.as_deref().unwrap_or_default();
        let key = MemoKey::child::<ConfigMap>(self.namespace, name);
        if matches!(
            self.cache.seen::<ConfigMap>(self.namespace, name),
            Seen::Absent
        ) && self.memo.get(key).is_none()
        {
            return Ok(BTreeSet::new());
        }
        let live = self.read::<ConfigMap>(name).await?;
        Ok(live
            .and_then(|c| c.data)
            .map(|data| data.into_keys().collect())
            .unwrap_or_default())
    }
}
