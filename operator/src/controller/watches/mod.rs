//! The watches of the children: one watcher per kind, whose objects are kept (pruned, and
//! packed: see [`packed`]) in a reflector `Store` for the apply step to read instead of the API
//! server, and whose events wake the owning IotMonitor only when something the operator cares
//! about changed.
//!
//! Without the filter, other controllers' status writes (the HPA controller's every few
//! seconds, each Deployment's rollout progress) each cost a full reconcile of the owner.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::{FutureExt, Stream, TryStreamExt, future};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PodTemplateSpec, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use self::packed::{Packed, Packer};
use super::apply::{Child, MemoKey, WriteMemo};

mod packed;
#[cfg(test)]
mod tests;

/// The cached children, one store per kind. A kind without a store (the default, and the
/// fast tests) is read from the API server.
#[derive(Clone, Default)]
pub struct ChildCache {
    deployments: Option<Store<Packed<Deployment>>>,
    stateful_sets: Option<Store<Packed<StatefulSet>>>,
    services: Option<Store<Packed<Service>>>,
    config_maps: Option<Store<Packed<ConfigMap>>>,
    autoscalers: Option<Store<Packed<HorizontalPodAutoscaler>>>,
    network_policies: Option<Store<Packed<NetworkPolicy>>>,
    secrets: Option<Store<Packed<Secret>>>,
    claims: Option<Store<Packed<PersistentVolumeClaim>>>,
}

impl ChildCache {
    /// The cached copy of `namespace/name`, if this kind is cached and the watch has seen it.
    pub fn get<K: Cached>(&self, namespace: &str, name: &str) -> Option<K> {
        let store = K::store(self)?;
        store.get(&ObjectRef::new(name).within(namespace))?.unpack()
    }

    /// Whether `namespace/name` surely does not exist (as far as the watch has seen): its kind
    /// is cached, the store holds the whole first list, and the object is not in it. A child
    /// created after the list arrives as a watch event within moments; the caller covers that
    /// moment (the apply step reads anything it wrote before).
    pub fn knows_absent<K: Cached>(&self, namespace: &str, name: &str) -> bool {
        let Some(store) = K::store(self) else {
            return false;
        };
        let listed = store
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|ready| ready.is_ok());
        listed && store.get(&ObjectRef::new(name).within(namespace)).is_none()
    }

    /// The cached children of kind `K` of monitor `instance` in `namespace` (the watches hold
    /// only the operator's own children), or `None` when this kind is not cached.
    pub fn list<K: Cached>(&self, namespace: &str, instance: &str) -> Option<Vec<K>> {
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

/// A child kind the watches cache: how to find its store, what to drop from the cached copy,
/// and which of its changes wake the owner.
pub trait Cached: Child + Send + Sync + 'static {
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
        hash_of(&self.meta().resource_version)
    }
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What the spec side of a fingerprint covers: spec changes (generation), our labels and
/// applied-hash annotation, and deletion in progress.
fn meta_fingerprint<K: Resource>(object: &K) -> impl Hash + '_ {
    let meta = object.meta();
    (
        meta.generation,
        &meta.labels,
        &meta.annotations,
        meta.deletion_timestamp.is_some(),
    )
}

macro_rules! cached {
    ($field:ident) => {
        fn store(cache: &ChildCache) -> Option<&Store<Packed<Self>>> {
            cache.$field.as_ref()
        }
        fn set_store(cache: &mut ChildCache, store: Store<Packed<Self>>) {
            cache.$field = Some(store);
        }
    };
}

/// What a Deployment or StatefulSet keeps in the cache: not its pod template (most of the
/// object), nor its status conditions (their times change on every sync).
fn prune_rollout<C>(
    meta: &mut ObjectMeta,
    template: &mut PodTemplateSpec,
    conditions: Option<&mut Option<Vec<C>>>,
) {
    meta.managed_fields = None;
    *template = PodTemplateSpec::default();
    if let Some(conditions) = conditions {
        *conditions = None;
    }
}

/// Spec changes and the rollout figures (replicas, updated, ready, revisions) of a pruned
/// workload's status, which no longer holds the conditions whose times change on every sync.
fn rollout_fingerprint<K: Resource, S: serde::Serialize>(object: &K, status: &Option<S>) -> u64 {
    hash_of(&(meta_fingerprint(object), serde_json::to_string(status).ok()))
}

impl Cached for Deployment {
    cached!(deployments);
    const GENERATION_TRACKS_SPEC: bool = true;

    fn prune(&mut self) {
        let conditions = self.status.as_mut().map(|s| &mut s.conditions);
        prune_rollout(&mut self.metadata, &mut self.spec.template, conditions);
    }

    fn fingerprint(&self) -> u64 {
        rollout_fingerprint(self, &self.status)
    }
}

impl Cached for StatefulSet {
    cached!(stateful_sets);
    const GENERATION_TRACKS_SPEC: bool = true;

    fn prune(&mut self) {
        let conditions = self.status.as_mut().map(|s| &mut s.conditions);
        prune_rollout(&mut self.metadata, &mut self.spec.template, conditions);
        self.spec.volume_claim_templates = None;
    }

    fn fingerprint(&self) -> u64 {
        rollout_fingerprint(self, &self.status)
    }
}

impl Cached for HorizontalPodAutoscaler {
    cached!(autoscalers);
    const CACHE_KEEPS_APPLIED: bool = true;

    /// The conditions stay: the IotMonitor's Autoscaling condition is made from them, also
    /// from a cached copy. The current metrics, rewritten on every sync, go.
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        if let Some(status) = &mut self.status {
            status.current_metrics = None;
        }
    }

    /// The spec, and the conditions' type, status and reason: a change of those (metrics
    /// becoming unavailable, scaling limited) wakes the owner; a metrics update does not.
    fn fingerprint(&self) -> u64 {
        let spec = serde_json::to_string(&self.spec).ok();
        hash_of(&(
            meta_fingerprint(self),
            spec,
            crate::controller::status::conditions_key(self),
        ))
    }
}

impl Cached for ConfigMap {
    cached!(config_maps);

    /// The applied-hash annotation stands for the content; drift is checked on a fresh read.
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        self.data = None;
        self.binary_data = None;
    }
}

impl Cached for Secret {
    cached!(secrets);

    /// Only the names of the keys are needed (to add missing ones): no credential is kept.
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        self.string_data = None;
        if let Some(data) = &mut self.data {
            let keys: BTreeMap<String, ByteString> = std::mem::take(data)
                .into_keys()
                .map(|k| (k, ByteString(Vec::new())))
                .collect();
            *data = keys;
        }
    }
}

impl Cached for Service {
    cached!(services);
    const CACHE_KEEPS_APPLIED: bool = true;
}

impl Cached for NetworkPolicy {
    cached!(network_policies);
    const CACHE_KEEPS_APPLIED: bool = true;
}

impl Cached for PersistentVolumeClaim {
    cached!(claims);
    const CACHE_KEEPS_APPLIED: bool = true;
}

/// Passes on the objects of watch events whose fingerprint changed, and every deletion (a
/// deleted child must be created again, whatever its fingerprint). After a re-list, objects
/// it no longer holds are forgotten.
pub struct ChangeFilter<K> {
    fingerprint: fn(&K) -> u64,
    /// Object (a hash of its uid: 8 bytes where the text took 60) → fingerprint. Two objects
    /// sharing a hash would only wake their owners more often, never less: their events
    /// overwrite each other's fingerprint.
    seen: HashMap<u64, u64>,
    relisted: Option<HashSet<u64>>,
}

impl<K: Resource> ChangeFilter<K> {
    pub fn new(fingerprint: fn(&K) -> u64) -> Self {
        Self {
            fingerprint,
            seen: HashMap::new(),
            relisted: None,
        }
    }

    /// The object to wake the owner with, if this event matters.
    pub fn admit(&mut self, event: watcher::Event<K>) -> Option<K> {
        match event {
            watcher::Event::Init => {
                self.relisted = Some(HashSet::new());
                None
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.relisted.take() {
                    self.seen.retain(|key, _| listed.contains(key));
                }
                None
            }
            watcher::Event::Apply(object) => self.changed(object),
            watcher::Event::InitApply(object) => {
                if let Some(listed) = &mut self.relisted {
                    listed.insert(key(&object));
                }
                self.changed(object)
            }
            watcher::Event::Delete(object) => {
                self.seen.remove(&key(&object));
                Some(object)
            }
        }
    }

    fn changed(&mut self, object: K) -> Option<K> {
        let fingerprint = (self.fingerprint)(&object);
        let previous = self.seen.insert(key(&object), fingerprint);
        (previous != Some(fingerprint)).then_some(object)
    }
}

/// The uid (a re-created object is a new one), or the name where a test left it out.
fn key<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    match &meta.uid {
        Some(uid) => hash_of(uid),
        None => hash_of(&(&meta.namespace, &meta.name)),
    }
}

/// The watches of one controller run, one per child kind, all limited by one `config`: each
/// adds its store to the cache and forgets deleted children in the memo.
pub struct Watches {
    config: watcher::Config,
    cache: ChildCache,
    memo: Arc<WriteMemo>,
}

impl Watches {
    pub fn new(config: watcher::Config, memo: Arc<WriteMemo>) -> Self {
        Self {
            config,
            cache: ChildCache::default(),
            memo,
        }
    }

    /// The stream of the changes of `api`'s objects that matter, for `Controller::owns_stream`.
    pub fn watch<K>(
        &mut self,
        api: Api<K>,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: Cached + DeserializeOwned,
    {
        watch(api, self.config.clone(), &mut self.cache, self.memo.clone())
    }

    /// The stores of every watch made.
    pub fn into_cache(self) -> ChildCache {
        self.cache
    }
}

/// Watches `api` (limited by `config`), keeps the pruned objects in a store added to `cache`,
/// and returns the stream of the changes that matter. A deleted child leaves `memo` too.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    cache: &mut ChildCache,
    memo: Arc<WriteMemo>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Cached + DeserializeOwned,
{
    let (reader, mut writer) = reflector::store::<Packed<K>>();
    K::set_store(cache, reader);
    let mut filter = ChangeFilter::new(K::fingerprint);
    let mut packer = Packer::default();
    // What `reflect` does, with the store's copy packed; the owner still gets the object.
    watcher(api, config)
        .modify(K::prune)
        .inspect_ok(move |event| {
            forget_deleted(&memo, event);
            writer.apply_watcher_event(&packer.event(event));
        })
        .try_filter_map(move |event| future::ready(Ok(filter.admit(event))))
}

/// A deleted child's memo entry is of no more use (a child of the same name is a new object).
pub(crate) fn forget_deleted<K: Cached>(memo: &WriteMemo, event: &watcher::Event<K>) {
    if let watcher::Event::Delete(child) = event {
        memo.forget(memo_key(child));
    }
}

fn memo_key<K: Cached>(child: &K) -> MemoKey {
    let meta = child.meta();
    MemoKey::child::<K>(
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod test_support {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    use super::*;

    /// Lists `objects` of kind `K` into a new store of `cache`, as a watch's first list would:
    /// pruned, and the store ready (synced) afterwards.
    fn list_into<K: Cached + DeserializeOwned>(
        cache: &mut ChildCache,
        objects: &[serde_json::Value],
    ) {
        let mut writer = Writer::<Packed<K>>::default();
        let mut packer = Packer::default();
        K::set_store(cache, writer.as_reader());
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects.iter().filter(|o| o["kind"] == K::KIND) {
            let mut object: K = serde_json::from_value(object.clone()).expect("a typed child");
            object.prune();
            writer.apply_watcher_event(&watcher::Event::InitApply(packer.pack(&object)));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    impl ChildCache {
        /// A synced cache holding `objects` (typed by their `kind`), as the watches would after
        /// their first list (`fixtures::cache_of`).
        pub(crate) fn listed<'a>(objects: impl IntoIterator<Item = &'a serde_json::Value>) -> Self {
            let objects: Vec<serde_json::Value> = objects.into_iter().cloned().collect();
            let mut cache = ChildCache::default();
            list_into::<Deployment>(&mut cache, &objects);
            list_into::<StatefulSet>(&mut cache, &objects);
            list_into::<Service>(&mut cache, &objects);
            list_into::<ConfigMap>(&mut cache, &objects);
            list_into::<HorizontalPodAutoscaler>(&mut cache, &objects);
            list_into::<NetworkPolicy>(&mut cache, &objects);
            list_into::<Secret>(&mut cache, &objects);
            list_into::<PersistentVolumeClaim>(&mut cache, &objects);
            cache
        }
    }
}
