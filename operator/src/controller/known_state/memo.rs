//! The write memo: for each child, the version our own last write produced, or one a read
//! found holding what we want. It is what lets the operator trust a cached copy without reading
//! it, and what keeps values the API server normalizes (quantities, fields a cluster does not
//! support) from causing a write on every reconcile: the live object never contains them
//! verbatim, but nobody has touched it since we wrote it.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::controller::hash::hash_of;

/// Which child a memo entry is about: a hash of its kind, namespace and name, 8 bytes where
/// the text took several times that (the memo holds one entry per child of every monitor).
/// Two children sharing a key would cost a read, never a skipped write: an entry is trusted
/// only at the resourceVersion it recorded, and the API server gives no two objects the same
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MemoKey(u64);

impl MemoKey {
    pub(crate) fn of(kind: &str, namespace: &str, name: &str) -> Self {
        Self(hash_of(&(kind, namespace, name)))
    }

    /// The key of the child of kind `K` named `name` in `namespace`.
    pub(crate) fn child<K: k8s_openapi::Resource>(namespace: &str, name: &str) -> Self {
        Self::of(K::KIND, namespace, name)
    }

    /// The key of `child`, from its own metadata.
    pub(crate) fn of_object<K: kube::Resource + k8s_openapi::Resource>(child: &K) -> Self {
        let meta = child.meta();
        Self::child::<K>(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

/// What the memo holds of one child: a version known to hold what we want, and the content
/// hash it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remembered {
    hash: u64,
    resource_version: Box<str>,
    generation: Option<i64>,
}

impl Remembered {
    /// The version of `meta`, holding content `hash`; `None` for an object that has no
    /// resourceVersion (not one the API server returned).
    pub(crate) fn of(hash: u64, meta: &ObjectMeta) -> Option<Self> {
        Some(Self {
            hash,
            resource_version: meta.resource_version.as_deref()?.into(),
            generation: meta.generation,
        })
    }

    /// `meta` is the very version remembered, holding content `hash`.
    pub(crate) fn is_version(&self, hash: u64, meta: &ObjectMeta) -> bool {
        self.hash == hash && meta.resource_version.as_deref() == Some(&*self.resource_version)
    }

    /// `meta`'s spec is the one remembered: the same generation (which the API server raises on
    /// every spec change of a Deployment or StatefulSet), whatever its status did since.
    pub(crate) fn is_spec(&self, hash: u64, meta: &ObjectMeta) -> bool {
        self.hash == hash && meta.generation.is_some() && self.generation == meta.generation
    }
}

/// Child → what the memo remembers of it. Entries go when the watch sees the child deleted.
#[derive(Debug, Default)]
pub(crate) struct WriteMemo(Mutex<HashMap<MemoKey, Remembered>>);

impl WriteMemo {
    /// What is remembered of `key`: `None` if we never wrote or checked it (or it was deleted
    /// since).
    pub(crate) fn get(&self, key: MemoKey) -> Option<Remembered> {
        self.0.lock().ok()?.get(&key).cloned()
    }

    /// `meta` is a version holding content `hash`: ours, or checked.
    pub(crate) fn remember(&self, key: MemoKey, hash: u64, meta: &ObjectMeta) {
        if let (Ok(mut memo), Some(remembered)) = (self.0.lock(), Remembered::of(hash, meta)) {
            memo.insert(key, remembered);
        }
    }

    /// The child is gone: a new one of the same name is unknown until written or checked.
    pub(crate) fn forget(&self, key: MemoKey) {
        if let Ok(mut memo) = self.0.lock() {
            memo.remove(&key);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().map(|memo| memo.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rv: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            resource_version: Some(rv.into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        }
    }

    fn key() -> MemoKey {
        MemoKey::of("Service", "iot", "k")
    }

    #[test]
    fn the_memo_recognises_only_the_version_it_was_told() {
        let memo = WriteMemo::default();
        memo.remember(key(), 1, &meta("7", 1));
        let remembered = memo.get(key()).expect("remembered");
        assert!(remembered.is_version(1, &meta("7", 1)));
        assert!(!remembered.is_version(1, &meta("8", 1)));
        assert!(!remembered.is_version(2, &meta("7", 1)));
        assert_eq!(memo.get(MemoKey::of("ConfigMap", "iot", "k")), None);
    }

    #[test]
    fn a_status_write_keeps_the_spec_known_a_spec_change_does_not() {
        let remembered = Remembered::of(1, &meta("7", 1)).expect("a version");
        assert!(remembered.is_spec(1, &meta("9", 1)));
        assert!(!remembered.is_spec(1, &meta("10", 2)));
        assert!(!remembered.is_spec(2, &meta("9", 1)));
        let no_generation = ObjectMeta {
            resource_version: Some("11".into()),
            ..ObjectMeta::default()
        };
        assert!(!remembered.is_spec(1, &no_generation));
    }

    #[test]
    fn a_forgotten_child_is_unknown() {
        let memo = WriteMemo::default();
        memo.remember(key(), 1, &meta("7", 1));
        memo.forget(key());
        assert_eq!(memo.get(key()), None);
    }

    #[test]
    fn an_object_without_a_version_is_not_remembered() {
        let memo = WriteMemo::default();
        memo.remember(key(), 1, &ObjectMeta::default());
        assert_eq!(memo.get(key()), None);
    }

    #[test]
    fn the_key_tells_kind_namespace_and_name_apart() {
        let keys = [
            MemoKey::of("Service", "iot", "a"),
            MemoKey::of("Service", "iot", "b"),
            MemoKey::of("Service", "other", "a"),
            MemoKey::of("ConfigMap", "iot", "a"),
            // Parts are delimited: moving a character between them is another key.
            MemoKey::of("Service", "io", "ta"),
        ];
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
