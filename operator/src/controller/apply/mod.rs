//! Server-side apply of the desired objects under one field manager, in a deliberate order,
//! then deletion of the children the spec no longer wants.
//!
//! A no-op reconcile writes nothing: each object carries the hash of what we last applied
//! (`iot.operator.dev/applied-hash`), and an object whose hash matches and whose live state
//! still contains everything we want is left alone. Where the API server normalizes what we
//! sent (quantities, fields a cluster does not support) the live object never contains it
//! verbatim, so we also remember the resourceVersion our own last write produced: if nobody
//! has touched the object since, there is nothing to correct.
//!
//! Reads come from the watches' cache (`watches::ChildCache`): a cached child at a
//! resourceVersion we wrote or already checked needs no request at all; any other version is
//! read once from the API server, compared, and remembered when it holds what we want. A child
//! the synced cache has never seen, and that we never wrote, is created without a read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod credentials;
mod drift;
mod error;
#[cfg(test)]
mod tests;

pub use self::drift::{MemoKey, WriteMemo, is_subset};
pub use self::error::ApplyError;
use super::desired::DesiredObjects;
use super::desired::labels::children_selector;
use super::diagnose::ContainerTrouble;
use super::hash::{content_hash_value, hex};
use super::validate::ValidatedMonitor;
use super::watches::{Cached, ChildCache};
use crate::constants::FIELD_MANAGER;
use crate::metrics::Metrics;

/// Hash of the applied configuration, on every applied object.
pub const APPLIED_HASH: &str = "iot.operator.dev/applied-hash";

/// What every child kind the operator applies is: a namespaced typed object it can serialise
/// for server-side apply and read back.
pub trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + k8s_openapi::Resource
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
{
}

impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
{
}

/// The live state of what was applied, for the status step. Objects read from the cache are
/// pruned copies (no pod templates: see `watches::Cached::prune`), which is all the status needs.
#[derive(Debug, Default)]
pub struct Applied {
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    /// Objects created, patched or deleted by this reconcile.
    pub writes: u32,
    pub deleted: Vec<String>,
    /// Why the InfluxDB pod does not start, when its StatefulSet has stalled (read after the
    /// apply: `diagnose`).
    pub influxdb_trouble: Option<ContainerTrouble>,
}

pub struct Applier<'a> {
    client: Client,
    namespace: &'a str,
    instance: &'a str,
    owner_uid: &'a str,
    metrics: &'a Metrics,
    memo: &'a WriteMemo,
    cache: &'a ChildCache,
    /// Counted from the applies of a wave, which run at once.
    writes: AtomicU32,
    deleted: Vec<String>,
}

impl<'a> Applier<'a> {
    /// Applies into the namespace of `model`, for the IotMonitor it was validated from,
    /// reading children from `cache` where it holds them.
    pub fn new(
        client: Client,
        model: &'a ValidatedMonitor,
        metrics: &'a Metrics,
        memo: &'a WriteMemo,
        cache: &'a ChildCache,
    ) -> Self {
        Self {
            client,
            namespace: &model.namespace,
            instance: &model.names.instance,
            owner_uid: &model.owner.uid,
            metrics,
            memo,
            cache,
            writes: AtomicU32::new(0),
            deleted: Vec::new(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Applies everything in three waves, each at once: what the pods read or reach (the
    /// credentials, configuration, claims, Services, and the NetworkPolicy before InfluxDB
    /// starts), then the workloads, then their autoscalers. A first reconcile so waits for the
    /// API server three times, not once per kind.
    pub async fn apply_all(mut self, desired: DesiredObjects) -> Result<Applied, ApplyError> {
        // Destructured without `..`: a new kind of child fails to compile here until it is
        // applied (and, where owned, cleaned up).
        let DesiredObjects {
            credentials,
            config_maps,
            persistent_volume_claims,
            services,
            stateful_sets,
            deployments,
            autoscalers,
            network_policies,
        } = desired;

        let ((), config_map_names, _, live_services, policy_names) = futures::try_join!(
            self.ensure_credentials(&credentials),
            self.apply_each(&config_maps),
            self.apply_each(&persistent_volume_claims),
            self.apply_live(&services),
            self.apply_each(&network_policies),
        )?;
        let (live_stateful_sets, live_deployments) = futures::try_join!(
            self.apply_live(&stateful_sets),
            self.apply_live(&deployments)
        )?;
        let live_autoscalers = self.apply_live(&autoscalers).await?;

        // Autoscalers first, so a Deployment is never left with an HPA pointing at nothing.
        self.delete_unwanted::<HorizontalPodAutoscaler>(&names(&live_autoscalers))
            .await?;
        self.delete_unwanted::<Deployment>(&names(&live_deployments))
            .await?;
        self.delete_unwanted::<StatefulSet>(&names(&live_stateful_sets))
            .await?;
        self.delete_unwanted::<NetworkPolicy>(&policy_names).await?;
        self.delete_unwanted::<Service>(&names(&live_services))
            .await?;
        self.delete_unwanted::<ConfigMap>(&config_map_names).await?;
        // PersistentVolumeClaims and the credentials Secret are never deleted here: they hold
        // data, and go with the IotMonitor only through their owner reference.

        Ok(Applied {
            stateful_sets: live_stateful_sets,
            deployments: live_deployments,
            services: live_services,
            autoscalers: live_autoscalers,
            writes: self.writes.into_inner(),
            deleted: self.deleted,
            influxdb_trouble: None,
        })
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    async fn apply_each<K>(&self, objects: &[K]) -> Result<BTreeSet<String>, ApplyError>
    where
        K: Cached,
    {
        Ok(names(&self.apply_live(objects).await?))
    }

    async fn apply_live<K>(&self, objects: &[K]) -> Result<Vec<K>, ApplyError>
    where
        K: Cached,
    {
        // Objects of one kind depend on nothing of each other: applied at once, so a first
        // reconcile waits for the API server once per kind, not once per object (a Service's
        // ClusterIP allocation takes long on a busy server).
        let applied = futures::future::try_join_all(objects.iter().map(|o| self.apply(o))).await?;
        let mut live = Vec::with_capacity(applied.len());
        for (object, wrote) in applied {
            if wrote {
                self.count_write();
            }
            live.push(object);
        }
        Ok(live)
    }

    /// The live object, and whether it had to be written.
    async fn apply<K>(&self, desired: &K) -> Result<(K, bool), ApplyError>
    where
        K: Cached,
    {
        let kind = <K as k8s_openapi::Resource>::KIND;
        let name = desired.meta().name.clone().unwrap_or_default();
        let hash_value = content_hash_value([serde_json::to_string(desired)
            .map_err(|e| ApplyError::Serialize(kind, e))?
            .as_str()]);
        let hash = hex(hash_value);
        let mut desired = desired.clone();
        desired
            .meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(APPLIED_HASH.to_owned(), hash.clone());
        let desired_json =
            serde_json::to_value(&desired).map_err(|e| ApplyError::Serialize(kind, e))?;
        let key = self.memo_key::<K>(&name);

        // The cached copy at a resourceVersion we wrote or checked ourselves: nothing changed
        // since, so no read at all. Any other version (someone's edit, a status update) is
        // read in full and compared below.
        if let Some(cached) = self.cache.get::<K>(self.namespace, &name)
            && applied_hash(&cached) == Some(&hash)
        {
            if self.memo.known_good(key, hash_value, cached.meta()) {
                return Ok((cached, false));
            }
            // Only the status moved (a rollout's progress): the spec is the one we know, and
            // the metadata can be compared right here.
            if K::GENERATION_TRACKS_SPEC
                && self.memo.spec_known_good(key, hash_value, cached.meta())
                && is_subset(&desired_json["metadata"], &meta_json(kind, &cached)?)
            {
                self.memo.remember(key, hash_value, cached.meta());
                return Ok((cached, false));
            }
            // The cache keeps all we applied (an HPA after the controller's status writes, a
            // claim once bound): compared right here.
            if K::CACHE_KEEPS_APPLIED {
                let cached_json =
                    serde_json::to_value(&cached).map_err(|e| ApplyError::Serialize(kind, e))?;
                if is_subset(&desired_json, &cached_json) {
                    self.memo.remember(key, hash_value, cached.meta());
                    return Ok((cached, false));
                }
            }
        }
        let api = self.api::<K>();
        let read_error = |source| ApplyError::Read {
            what: format!("{kind} {name}"),
            source,
        };
        // A first reconcile creates its children without reading them first.
        let live = if self.surely_new::<K>(&name, key) {
            None
        } else {
            api.get_opt(&name).await.map_err(read_error)?
        };
        if let Some(live) = live {
            if applied_hash(&live) == Some(&hash) {
                if self.memo.known_good(key, hash_value, live.meta()) {
                    return Ok((live, false));
                }
                let live_json =
                    serde_json::to_value(&live).map_err(|e| ApplyError::Serialize(kind, e))?;
                if is_subset(&desired_json, &live_json) {
                    self.memo.remember(key, hash_value, live.meta());
                    return Ok((live, false));
                }
            }
            tracing::info!(kind, name, "correcting drift or applying a change");
        } else {
            tracing::info!(kind, name, "creating");
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = api
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .map_err(|source| ApplyError::Apply { kind, name, source })?;
        self.metrics.record_write(kind, "apply");
        self.memo.remember(key, hash_value, applied.meta());
        Ok((applied, true))
    }

    fn memo_key<K: Cached>(&self, name: &str) -> MemoKey {
        MemoKey::child::<K>(self.namespace, name)
    }

    /// The synced watch has never seen the child and we never wrote it (`key`: its memo key):
    /// it does not exist. (What we wrote before may not have reached the watch yet, or was
    /// deleted since: read.)
    fn surely_new<K: Cached>(&self, name: &str, key: MemoKey) -> bool {
        self.cache.knows_absent::<K>(self.namespace, name) && !self.memo.knows(key)
    }

    /// Deletes our children of kind `K` that are not in `wanted`: selected by our labels and
    /// checked against the owner reference, so nothing of anyone else's is ever touched.
    async fn delete_unwanted<K>(&mut self, wanted: &BTreeSet<String>) -> Result<(), ApplyError>
    where
        K: Cached,
    {
        let kind = <K as k8s_openapi::Resource>::KIND;
        let api = self.api::<K>();
        for child in self.children::<K>().await? {
            let name = child.name.clone().unwrap_or_default();
            let ours = child
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == self.owner_uid && o.controller == Some(true));
            if !ours || wanted.contains(&name) || child.deletion_timestamp.is_some() {
                continue;
            }
            tracing::info!(kind, name, "deleting a child the spec no longer wants");
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(source) => return Err(ApplyError::Delete { kind, name, source }),
            }
            self.metrics.record_write(kind, "delete");
            self.count_write();
            self.deleted.push(format!("{kind}/{name}"));
        }
        Ok(())
    }
    /// Our children of kind `K` (by label): from the cache, else listed.
    async fn children<K: Cached>(&self) -> Result<Vec<ObjectMeta>, ApplyError> {
        if let Some(cached) = self.cache.list::<K>(self.namespace, self.instance) {
            return Ok(cached.into_iter().map(|c| c.meta().clone()).collect());
        }
        let kind = <K as k8s_openapi::Resource>::KIND;
        let params = ListParams::default().labels(&children_selector(self.instance));
        let listed = self
            .api::<K>()
            .list_metadata(&params)
            .await
            .map_err(|source| ApplyError::Read {
                what: format!("{kind} list"),
                source,
            })?;
        Ok(listed.items.into_iter().map(|c| c.metadata).collect())
    }
}

fn meta_json<K: Resource>(kind: &'static str, object: &K) -> Result<serde_json::Value, ApplyError> {
    serde_json::to_value(object.meta()).map_err(|e| ApplyError::Serialize(kind, e))
}

fn applied_hash<K: Resource>(object: &K) -> Option<&String> {
    object.meta().annotations.as_ref()?.get(APPLIED_HASH)
}

fn names<K: Resource>(objects: &[K]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}
