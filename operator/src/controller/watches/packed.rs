//! A cached child in little memory: its pruned object as compact JSON, with the few fields the
//! store's key and the cache's lookups need beside it.
//!
//! A typed k8s-openapi object holds every optional field inline and each label map in a
//! B-tree node of its own: a monitor's pruned children took about 64 KB that way, six times
//! their JSON. A child is unpacked only when a reconcile reads it, a few times per reconcile.

use std::borrow::Cow;
use std::marker::PhantomData;

use kube::ResourceExt;
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher;

use super::super::apply::Child;
use crate::controller::desired::labels::INSTANCE;

pub struct Packed<K> {
    name: Box<str>,
    namespace: Option<Box<str>>,
    /// The monitor the child belongs to (its `app.kubernetes.io/instance` label).
    instance: Option<Box<str>>,
    json: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Child> Packed<K> {
    pub fn pack(object: &K) -> Self {
        let meta = object.meta();
        Packed {
            name: meta.name.as_deref().unwrap_or_default().into(),
            namespace: meta.namespace.as_deref().map(Box::from),
            instance: object.labels().get(INSTANCE).map(|i| i.as_str().into()),
            // A k8s-openapi object always serialises (its maps have string keys); if it did
            // not, unpacking fails and the reader falls back to the API server.
            json: serde_json::to_string(object).unwrap_or_default().into(),
            kind: PhantomData,
        }
    }

    /// The object as it was packed; `None` only if it could not be packed.
    pub fn unpack(&self) -> Option<K> {
        serde_json::from_str(&self.json).ok()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }
}

// Not derived: a derive would ask `K: Clone` of the marker too.
impl<K> Clone for Packed<K> {
    fn clone(&self) -> Self {
        Packed {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            instance: self.instance.clone(),
            json: self.json.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Packed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("bytes", &self.json.len())
            .finish()
    }
}

/// The store keys a packed child by kind, namespace and name, as it would the object.
impl<K: Child> Lookup for Packed<K> {
    type DynamicType = ();

    fn kind(dt: &()) -> Cow<'_, str> {
        <K as kube::Resource>::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        <K as kube::Resource>::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        <K as kube::Resource>::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        <K as kube::Resource>::plural(dt)
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        self.namespace.as_deref().map(Cow::Borrowed)
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// The watch event with its objects packed, for the store's writer.
pub fn packed<K: Child>(event: &watcher::Event<K>) -> watcher::Event<Packed<K>> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(Packed::pack(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(Packed::pack(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(Packed::pack(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}
