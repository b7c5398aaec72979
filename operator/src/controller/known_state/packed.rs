//! A cached child in little memory: its pruned object as compact JSON, compressed, with the few
//! fields the store's key and the cache's lookups need beside it.
//!
//! A typed k8s-openapi object holds every optional field inline and each label map in a
//! B-tree node of its own: several times the size of its JSON. As JSON the children were still
//! most of the operator's heap at scale (docs/benchmarks.md, "Operator at scale", measures the
//! peak RSS), and children of one kind are nearly alike (the same keys, labels, owner, shape):
//! each is compressed (LZ4) against the first child of its kind the watch saw, its [`Packer`]'s
//! dictionary. A child is unpacked only when a reconcile reads it, a few times per reconcile.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use kube::runtime::reflector::Lookup;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::controller::desired::labels::INSTANCE;

/// One cached child, packed.
pub(crate) struct Packed<K> {
    name: Box<str>,
    namespace: Option<Box<str>>,
    /// The monitor the child belongs to (its `app.kubernetes.io/instance` label).
    instance: Option<Box<str>>,
    /// The JSON, LZ4-compressed against `dictionary`, its length in front.
    compressed: Box<[u8]>,
    dictionary: Arc<[u8]>,
    kind: PhantomData<fn() -> K>,
}

/// Packs the children of one kind, against the JSON of the first one it packed.
#[derive(Default)]
pub(super) struct Packer {
    dictionary: Option<Arc<[u8]>>,
}

impl Packer {
    pub(super) fn pack<K: Resource + Serialize>(&mut self, object: &K) -> Packed<K> {
        let meta = object.meta();
        // A k8s-openapi object always serialises (its maps have string keys); if it did not,
        // unpacking fails and the reader falls back to the API server.
        let json = serde_json::to_vec(object).unwrap_or_default();
        let dictionary = self
            .dictionary
            .get_or_insert_with(|| Arc::from(json.as_slice()))
            .clone();
        Packed {
            name: meta.name.as_deref().unwrap_or_default().into(),
            namespace: meta.namespace.as_deref().map(Box::from),
            instance: object.labels().get(INSTANCE).map(|i| i.as_str().into()),
            compressed: lz4_flex::block::compress_prepend_size_with_dict(&json, &dictionary)
                .into_boxed_slice(),
            dictionary,
            kind: PhantomData,
        }
    }

    /// The watch event with its objects packed, for the store's writer.
    pub(super) fn event<K: Resource + Serialize>(
        &mut self,
        event: &watcher::Event<K>,
    ) -> watcher::Event<Packed<K>> {
        match event {
            watcher::Event::Apply(o) => watcher::Event::Apply(self.pack(o)),
            watcher::Event::Delete(o) => watcher::Event::Delete(self.pack(o)),
            watcher::Event::Init => watcher::Event::Init,
            watcher::Event::InitApply(o) => watcher::Event::InitApply(self.pack(o)),
            watcher::Event::InitDone => watcher::Event::InitDone,
        }
    }
}

impl<K: DeserializeOwned> Packed<K> {
    /// The object as it was packed; `None` only if it could not be packed.
    pub(super) fn unpack(&self) -> Option<K> {
        let json = lz4_flex::block::decompress_size_prepended_with_dict(
            &self.compressed,
            &self.dictionary,
        )
        .ok()?;
        serde_json::from_slice(&json).ok()
    }
}

impl<K> Packed<K> {
    /// Bytes the packed object holds on the heap (its compressed JSON and names).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.compressed.len()
            + self.name.len()
            + self.namespace.as_ref().map_or(0, |n| n.len())
            + self.instance.as_ref().map_or(0, |i| i.len())
    }

    pub(super) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub(super) fn instance(&self) -> Option<&str> {
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
            compressed: self.compressed.clone(),
            dictionary: self.dictionary.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> std::fmt::Debug for Packed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("compressed_bytes", &self.compressed.len())
            .finish()
    }
}

/// The store keys a packed child by kind, namespace and name, as it would the object.
impl<K: Resource<DynamicType = ()>> Lookup for Packed<K> {
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use serde_json::json;

    use super::*;

    /// A Service as the API server returns it, for monitor `m{i}`.
    fn service(i: usize) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("m{i}-coap"),
                "namespace": "iot",
                "uid": format!("5f0c9a4e-1b2c-4d5e-8f90-{i:012}"),
                "resourceVersion": format!("{}", 100_000 + i * 7),
                "creationTimestamp": "2026-12-02T00:00:00Z",
                "labels": {
                    "app.kubernetes.io/name": "coap-server",
                    "app.kubernetes.io/instance": format!("m{i}"),
                    "app.kubernetes.io/component": "ingest",
                    "app.kubernetes.io/part-of": "iot-monitor",
                    "app.kubernetes.io/managed-by": "iot-operator"
                },
                "annotations": {"iot.operator.dev/applied-hash": format!("{:016x}", i * 7919)},
                "ownerReferences": [{
                    "apiVersion": "iot.operator.dev/v1alpha1", "kind": "IotMonitor",
                    "name": format!("m{i}"), "uid": format!("0d1e2f3a-4b5c-6d7e-8f90-{i:012}"),
                    "controller": true, "blockOwnerDeletion": true
                }]
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": format!("198.18.{}.{}", i / 250, i % 250 + 1),
                "ports": [{"name": "coap", "port": 5683, "protocol": "UDP", "targetPort": 5683}],
                "selector": {"app.kubernetes.io/name": "coap-server", "app.kubernetes.io/instance": format!("m{i}")},
                "sessionAffinity": "None",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "internalTrafficPolicy": "Cluster"
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_packed_child_unpacks_to_the_same_object_and_its_fields_are_beside_it() {
        let mut packer = Packer::default();
        let packed: Vec<Packed<Service>> = (0..20).map(|i| packer.pack(&service(i))).collect();
        for (i, p) in packed.iter().enumerate() {
            assert_eq!(p.unpack(), Some(service(i)));
            assert_eq!(p.instance(), Some(format!("m{i}").as_str()));
            assert_eq!(p.namespace(), Some("iot"));
            assert_eq!(
                Lookup::name(p).as_deref(),
                Some(format!("m{i}-coap").as_str())
            );
        }
        // A clone shares the dictionary and unpacks alike.
        assert_eq!(packed[3].clone().unpack(), Some(service(3)));
    }

    #[test]
    fn children_after_the_first_of_their_kind_take_a_fraction_of_their_json() {
        let mut packer = Packer::default();
        let json_bytes = serde_json::to_vec(&service(1)).unwrap().len();
        packer.pack(&service(0));
        let packed = packer.pack(&service(1));
        // About 1 KB of JSON; what differs from the first (names, uids, versions, the address)
        // is a few dozen bytes.
        assert!(json_bytes > 900, "{json_bytes}");
        assert!(
            packed.heap_bytes() * 4 < json_bytes,
            "{} bytes packed of {json_bytes}",
            packed.heap_bytes()
        );
    }
}
