//! When a write can be skipped: the live object already holds what we want, or nobody has
//! touched it since our own last write or our last check.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

/// Which child a memo entry is about: a hash of its kind, namespace and name, 8 bytes where
/// the text took several times that (the memo holds one entry per child of every monitor).
/// Two children sharing a key would cost a read, never a skipped write: an entry is trusted
/// only at the resourceVersion it recorded, and the API server gives no two objects the same
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoKey(u64);

impl MemoKey {
    pub fn of(kind: &str, namespace: &str, name: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        (kind, namespace, name).hash(&mut hasher);
        Self(hasher.finish())
    }

    /// The key of the child of kind `K` named `name` in `namespace`.
    pub fn child<K: k8s_openapi::Resource>(namespace: &str, name: &str) -> Self {
        Self::of(K::KIND, namespace, name)
    }
}

/// A version of a child known to hold what we want.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    hash: u64,
    resource_version: Box<str>,
    generation: Option<i64>,
}

/// Child → a version known to hold what we want (the one our last write produced, or one a
/// read found matching), with the content hash it holds. Entries go when the watch sees the
/// child deleted.
#[derive(Debug, Default)]
pub struct WriteMemo(Mutex<HashMap<MemoKey, Known>>);

impl WriteMemo {
    pub(super) fn remember(&self, key: MemoKey, hash: u64, meta: &ObjectMeta) {
        if let (Ok(mut memo), Some(rv)) = (self.0.lock(), meta.resource_version.as_deref()) {
            let known = Known {
                hash,
                resource_version: rv.into(),
                generation: meta.generation,
            };
            memo.insert(key, known);
        }
    }

    /// The child is gone: a new one of the same name is unknown until written or checked.
    pub fn forget(&self, key: MemoKey) {
        if let Ok(mut memo) = self.0.lock() {
            memo.remove(&key);
        }
    }

    /// Whether any version of the object is remembered (we wrote or checked it before).
    pub(super) fn knows(&self, key: MemoKey) -> bool {
        self.0.lock().is_ok_and(|memo| memo.contains_key(&key))
    }

    /// The object is at the very version we know.
    pub(super) fn known_good(&self, key: MemoKey, hash: u64, meta: &ObjectMeta) -> bool {
        self.matches(key, hash, |k| {
            meta.resource_version.as_deref() == Some(&*k.resource_version)
        })
    }

    /// The object's spec is the one we know: the same generation (which the API server raises
    /// on every spec change of a Deployment or StatefulSet), whatever its status did since.
    pub(super) fn spec_known_good(&self, key: MemoKey, hash: u64, meta: &ObjectMeta) -> bool {
        self.matches(key, hash, |k| {
            meta.generation.is_some() && k.generation == meta.generation
        })
    }

    fn matches(&self, key: MemoKey, hash: u64, same: impl Fn(&Known) -> bool) -> bool {
        let Ok(memo) = self.0.lock() else {
            return false;
        };
        memo.get(&key).is_some_and(|k| k.hash == hash && same(k))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().map(|memo| memo.len()).unwrap_or_default()
    }
}

/// Whether every field of `desired` is present with the same value in `live`. Lists must have
/// the same length; fields only `live` has (defaults, other managers) do not matter.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| is_subset(dv, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn live_fields_added_by_defaulting_do_not_count_as_drift() {
        let desired = json!({"spec": {"ports": [{"port": 80}]}});
        let live =
            json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn a_changed_or_missing_field_is_drift() {
        let desired = json!({"spec": {"replicas": 2, "x": "a"}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 3, "x": "a"}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"replicas": 2}})));
    }

    #[test]
    fn lists_must_match_in_length() {
        let desired = json!({"containers": [{"name": "a"}]});
        let live = json!({"containers": [{"name": "a"}, {"name": "injected"}]});
        assert!(!is_subset(&desired, &live));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(is_subset(&json!({"v": 1}), &json!({"v": 1.0})));
    }

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
        assert!(memo.known_good(key(), 1, &meta("7", 1)));
        assert!(!memo.known_good(key(), 1, &meta("8", 1)));
        assert!(!memo.known_good(key(), 2, &meta("7", 1)));
        assert!(!memo.known_good(MemoKey::of("ConfigMap", "iot", "k"), 1, &meta("7", 1)));
    }

    #[test]
    fn a_status_write_keeps_the_spec_known_a_spec_change_does_not() {
        let memo = WriteMemo::default();
        memo.remember(key(), 1, &meta("7", 1));
        assert!(memo.spec_known_good(key(), 1, &meta("9", 1)));
        assert!(!memo.spec_known_good(key(), 1, &meta("10", 2)));
        let no_generation = ObjectMeta {
            resource_version: Some("11".into()),
            ..ObjectMeta::default()
        };
        assert!(!memo.spec_known_good(key(), 1, &no_generation));
    }

    #[test]
    fn a_forgotten_child_is_unknown() {
        let memo = WriteMemo::default();
        memo.remember(key(), 1, &meta("7", 1));
        memo.forget(key());
        assert!(!memo.knows(key()));
        assert!(!memo.known_good(key(), 1, &meta("7", 1)));
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
