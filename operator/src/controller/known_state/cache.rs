//! The cache of the children: one reflector store per kind, filled by the watches (through a
//! [`Feed`](super::feed::Feed)), read by the apply step instead of the API server. What each
//! kind keeps in it, and which of its changes matter, is in [`kinds`](super::kinds).

use std::fmt::Debug;

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::packed::Packed;

/// What every child kind the operator applies is: a namespaced typed object it can serialise
/// for server-side apply and read back.
pub(crate) trait Child:
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

/// A child kind the cache holds: how to find its store, what to drop from the cached copy,
/// and which of its changes wake the owner. The impls are in [`kinds`](super::kinds).
pub(crate) trait Cached: Child + Send + Sync + 'static {
    /// The API server raises `metadata.generation` on every change of this kind's spec.
    const GENERATION_TRACKS_SPEC: bool = false;

    /// [`Cached::prune`] keeps everything the operator applies to this kind, so drift can be
    /// judged from the cached copy without reading the object again.
    const CACHE_KEEPS_APPLIED: bool = false;

    fn store(cache: &ChildCache) -> Option<&Store<Packed<Self>>>;
    fn set_store(cache: &mut ChildCache, store: Store<Packed<Self>>);

    /// Drops what neither the apply step nor the status needs, to keep the cache small:
    /// managed fields always; pod templates, status conditions, the HPA status, ConfigMap
    /// contents and Secret values where the kind has them.
    fn prune(&mut self) {
        self.meta_mut().managed_fields = None;
    }

    /// A hash of what the operator reacts to; an event with an unchanged fingerprint does not
    /// wake the owner. Default: every change (the resourceVersion).
    fn fingerprint(&self) -> u64 {
        crate::controller::hash::hash_of(&self.meta().resource_version)
    }
}

/// The cached children, one store per kind. A kind without a store (the default, and the
/// fast tests) is read from the API server.
#[derive(Clone, Default)]
pub(crate) struct ChildCache {
    pub(super) deployments: Option<Store<Packed<Deployment>>>,
    pub(super) stateful_sets: Option<Store<Packed<StatefulSet>>>,
    pub(super) services: Option<Store<Packed<Service>>>,
    pub(super) config_maps: Option<Store<Packed<ConfigMap>>>,
    pub(super) autoscalers: Option<Store<Packed<HorizontalPodAutoscaler>>>,
    pub(super) network_policies: Option<Store<Packed<NetworkPolicy>>>,
    pub(super) secrets: Option<Store<Packed<Secret>>>,
    pub(super) claims: Option<Store<Packed<PersistentVolumeClaim>>>,
    pub(super) service_accounts: Option<Store<Packed<ServiceAccount>>>,
    pub(super) roles: Option<Store<Packed<Role>>>,
    pub(super) role_bindings: Option<Store<Packed<RoleBinding>>>,
    pub(super) cron_jobs: Option<Store<Packed<CronJob>>>,
    /// The restore Job and the backup CronJob's Jobs (they carry the monitor's labels).
    pub(super) jobs: Option<Store<Packed<Job>>>,
}

/// What is known of one child in the cluster: what the cache shows, or what a read returned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen<K> {
    /// The watch's copy: pruned, and perhaps a moment behind the API server.
    Cached(K),
    /// The cache holds the whole list of this kind, and no such child. A child created after
    /// the list arrives as a watch event within moments; the memo covers that moment (what we
    /// wrote, we read).
    Absent,
    /// The cache cannot tell: the kind is not cached, or its first list has not arrived.
    Unknown,
    /// What a read from the API server returned: `None` if there is no such child.
    Read(Option<K>),
}

impl<K> Seen<K> {
    /// The object seen, if any.
    pub(crate) fn into_object(self) -> Option<K> {
        match self {
            Seen::Cached(object) | Seen::Read(Some(object)) => Some(object),
            Seen::Absent | Seen::Unknown | Seen::Read(None) => None,
        }
    }
}

impl ChildCache {
    /// What the cache shows of `namespace/name`.
    pub(crate) fn seen<K: Cached>(&self, namespace: &str, name: &str) -> Seen<K> {
        let Some(store) = K::store(self) else {
            return Seen::Unknown;
        };
        match store.get(&ObjectRef::new(name).within(namespace)) {
            // A copy that does not unpack is read from the API server instead.
            Some(packed) => packed.unpack().map_or(Seen::Unknown, Seen::Cached),
            None if is_listed(store) => Seen::Absent,
            None => Seen::Unknown,
        }
    }

    /// The cached children of kind `K` of monitor `instance` in `namespace` (the watches hold
    /// only the operator's own children), or `None` when this kind is not cached.
    pub(crate) fn list<K: Cached>(&self, namespace: &str, instance: &str) -> Option<Vec<K>> {
        let store = K::store(self)?;
        Some(
            store
                .state_filter(|o| {
                    o.namespace() == Some(namespace) && o.instance() == Some(instance)
                })
                .iter()
                .filter_map(|o| o.unpack())
                .collect(),
        )
    }
}

/// The store holds the whole first list of its watch.
fn is_listed<K: Cached>(store: &Store<Packed<K>>) -> bool {
    store
        .wait_until_ready()
        .now_or_never()
        .is_some_and(|ready| ready.is_ok())
}

#[cfg(test)]
mod tests;
