//! When a write can be skipped: the live object already holds what we want, or nobody has
//! touched it since our own last write or our last check.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

/// `kind/namespace/name` → a resourceVersion known to hold what we want (the one our last write
/// produced, or one a read found matching), with the hash it holds.
#[derive(Debug, Default)]
pub struct WriteMemo(Mutex<HashMap<String, (String, String)>>);

impl WriteMemo {
    pub(super) fn remember(&self, key: String, hash: String, resource_version: Option<String>) {
        if let (Ok(mut memo), Some(rv)) = (self.0.lock(), resource_version) {
            memo.insert(key, (hash, rv));
        }
    }

    pub(super) fn known_good(&self, key: &str, hash: &str, rv: Option<&str>) -> bool {
        let Ok(memo) = self.0.lock() else {
            return false;
        };
        matches!((memo.get(key), rv), (Some((h, r)), Some(live)) if h == hash && r == live)
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

    #[test]
    fn the_memo_recognises_only_the_version_it_was_told() {
        let memo = WriteMemo::default();
        memo.remember("k".into(), "h".into(), Some("7".into()));
        assert!(memo.known_good("k", "h", Some("7")));
        assert!(!memo.known_good("k", "h", Some("8")));
        assert!(!memo.known_good("k", "other", Some("7")));
    }
}
