//! Which watch events wake the owning IotMonitor: those whose object's fingerprint
//! ([`Cached::fingerprint`](super::cache::Cached::fingerprint)) changed, and every deletion.

use std::collections::{HashMap, HashSet};

use kube::Resource;
use kube::runtime::watcher;

use crate::controller::hash::hash_of;

/// Passes on the objects of watch events whose fingerprint changed, and every deletion (a
/// deleted child must be created again, whatever its fingerprint). After a re-list, objects
/// it no longer holds are forgotten.
pub(super) struct ChangeFilter<K> {
    fingerprint: fn(&K) -> u64,
    /// Object (a hash of its uid: 8 bytes where the text took 60) → fingerprint. Two objects
    /// sharing a hash would only wake their owners more often, never less: their events
    /// overwrite each other's fingerprint.
    seen: HashMap<u64, u64>,
    relisted: Option<HashSet<u64>>,
}

impl<K: Resource> ChangeFilter<K> {
    pub(super) fn new(fingerprint: fn(&K) -> u64) -> Self {
        Self {
            fingerprint,
            seen: HashMap::new(),
            relisted: None,
        }
    }

    /// The object to wake the owner with, if this event matters.
    pub(super) fn admit(&mut self, event: watcher::Event<K>) -> Option<K> {
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn config_map(name: &str, uid: &str, rv: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("iot".into()),
                uid: Some(uid.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// Every change counts, as for the kinds without a fingerprint of their own.
    fn filter() -> ChangeFilter<ConfigMap> {
        ChangeFilter::new(|cm| hash_of(&cm.metadata.resource_version))
    }

    #[test]
    fn a_first_sighting_wakes_the_owner_and_a_repeat_does_not() {
        let mut filter = filter();
        let cm = config_map("a", "1", "1");
        assert!(filter.admit(watcher::Event::Apply(cm.clone())).is_some());
        assert!(filter.admit(watcher::Event::Apply(cm)).is_none());
    }

    #[test]
    fn a_deletion_always_wakes_the_owner() {
        let mut filter = filter();
        let cm = config_map("a", "1", "1");
        filter.admit(watcher::Event::Apply(cm.clone()));
        assert!(filter.admit(watcher::Event::Delete(cm.clone())).is_some());
        // Created again under the same name: a new object, seen for the first time.
        let again = config_map("a", "2", "1");
        assert!(filter.admit(watcher::Event::Apply(again)).is_some());
    }

    #[test]
    fn a_relist_repeats_nothing_unchanged_and_forgets_what_is_gone() {
        let mut filter = filter();
        filter.admit(watcher::Event::Apply(config_map("a", "1", "1")));
        filter.admit(watcher::Event::Apply(config_map("b", "2", "1")));
        filter.admit(watcher::Event::Init);
        assert!(
            filter
                .admit(watcher::Event::InitApply(config_map("a", "1", "1")))
                .is_none()
        );
        filter.admit(watcher::Event::InitDone);
        assert_eq!(
            filter.seen.len(),
            1,
            "b was deleted while the watch was down"
        );
        assert!(
            filter
                .admit(watcher::Event::Apply(config_map("b", "2", "1")))
                .is_some()
        );
    }
}
