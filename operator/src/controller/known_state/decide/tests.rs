//! The decision, one row per case: what the memo remembers, what is seen of the child, and
//! what to do. Each row names the kind it is about, since kinds differ in what their cached
//! copies can settle.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use super::*;

/// A child as the cluster holds it: the marked desired object at a resourceVersion and
/// generation, with one difference or none.
#[derive(Debug, Clone, Copy)]
struct At {
    rv: &'static str,
    generation: i64,
    edit: Edit,
}

#[derive(Debug, Clone, Copy)]
enum Edit {
    None,
    /// Applied from other content: another applied-hash.
    OtherMark,
    /// One of our labels has another value.
    OtherLabel,
    /// Fields only the server sets (uid, creation time).
    ServerFields,
}

const fn at(rv: &'static str, generation: i64) -> At {
    At {
        rv,
        generation,
        edit: Edit::None,
    }
}

impl At {
    const fn with(self, edit: Edit) -> At {
        At { edit, ..self }
    }

    /// `marked` as the cluster holds it.
    fn of<K: Cached>(&self, marked: &K) -> K {
        let mut json = serde_json::to_value(marked).expect("serializes");
        let meta = &mut json["metadata"];
        meta["resourceVersion"] = json!(self.rv);
        meta["generation"] = json!(self.generation);
        match self.edit {
            Edit::None => {}
            Edit::OtherMark => meta["annotations"][APPLIED_HASH] = json!("0000000000000000"),
            Edit::OtherLabel => meta["labels"]["app.kubernetes.io/instance"] = json!("other"),
            Edit::ServerFields => {
                meta["uid"] = json!("5f0c9a4e");
                meta["creationTimestamp"] = json!("2026-12-02T00:00:00Z");
            }
        }
        serde_json::from_value(json).expect("a typed child")
    }
}

/// The version the memo remembers, holding the wanted content: resourceVersion, generation.
type Memo = Option<(&'static str, i64)>;

/// Decides for one kind.
type Judge = fn(Memo, &Seen<At>) -> Decision;
const DEPLOYMENT: Judge = judge::<Deployment>;
const SERVICE: Judge = judge::<Service>;
const CONFIG_MAP: Judge = judge::<ConfigMap>;

fn desired<K: Cached>() -> K {
    let metadata = json!({"name": "lab-x", "namespace": "iot",
                          "labels": {"app.kubernetes.io/instance": "lab"}});
    let object = match K::KIND {
        "Deployment" => json!({"metadata": metadata,
                               "spec": {"replicas": 1, "selector": {}, "template": {}}}),
        "Service" => json!({"metadata": metadata, "spec": {"ports": [{"port": 80}]}}),
        _ => json!({"metadata": metadata, "data": {"grafana.ini": "[server]"}}),
    };
    serde_json::from_value(object).expect("a typed child")
}

fn judge<K: Cached>(memo: Memo, seen: &Seen<At>) -> Decision {
    let (marked, wanted) = Wanted::mark(&desired::<K>()).expect("serializes");
    let remembered = memo.and_then(|(rv, generation)| {
        let meta = ObjectMeta {
            resource_version: Some(rv.into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        };
        Remembered::of(wanted.hash(), &meta)
    });
    let seen = match seen {
        Seen::Cached(at) => Seen::Cached(at.of(&marked)),
        Seen::Absent => Seen::Absent,
        Seen::Unknown => Seen::Unknown,
        Seen::Read(at) => Seen::Read(at.map(|at| at.of(&marked))),
    };
    decide(&wanted, remembered.as_ref(), &seen).expect("serializes")
}

use Decision::{ReadFirst, Skip, Write};

#[rustfmt::skip]
const TABLE: &[(&str, Judge, Memo, Seen<At>, Decision)] = &[
    // What the cache shows.
    ("a kind the cache does not hold, or has not listed yet, is read",
        CONFIG_MAP, None, Seen::Unknown, ReadFirst(ReadReason::NotCached)),
    ("a child the synced cache never saw and we never wrote is created without a read",
        DEPLOYMENT, None, Seen::Absent, Write(WriteReason::New)),
    ("a child we wrote that the watch does not show yet is read",
        DEPLOYMENT, Some(("7", 1)), Seen::Absent, ReadFirst(ReadReason::WrittenButNotCached)),
    ("a cached copy at the version we wrote is trusted",
        CONFIG_MAP, Some(("7", 1)), Seen::Cached(at("7", 1)), Skip(SkipReason::KnownVersion)),
    ("a cached copy applied from other content is read",
        SERVICE, Some(("7", 1)), Seen::Cached(at("7", 1).with(Edit::OtherMark)), ReadFirst(ReadReason::OtherContent)),
    ("a Deployment whose status alone moved is trusted",
        DEPLOYMENT, Some(("7", 1)), Seen::Cached(at("9", 1)), Skip(SkipReason::KnownSpec)),
    ("a Deployment at a new generation is read",
        DEPLOYMENT, Some(("7", 1)), Seen::Cached(at("9", 2)), ReadFirst(ReadReason::UncheckedVersion)),
    ("a Deployment whose label was edited at the same generation is read",
        DEPLOYMENT, Some(("7", 1)), Seen::Cached(at("9", 1).with(Edit::OtherLabel)), ReadFirst(ReadReason::UncheckedVersion)),
    ("a Deployment at a version nobody checked is read",
        DEPLOYMENT, None, Seen::Cached(at("9", 1)), ReadFirst(ReadReason::UncheckedVersion)),
    ("a Service, which the cache keeps whole, is judged there at any version",
        SERVICE, None, Seen::Cached(at("9", 1).with(Edit::ServerFields)), Skip(SkipReason::CacheHoldsAll)),
    ("a Service edited in the cache is read",
        SERVICE, Some(("7", 1)), Seen::Cached(at("9", 1).with(Edit::OtherLabel)), ReadFirst(ReadReason::UncheckedVersion)),
    ("a ConfigMap at another version is read: its cached copy holds no data",
        CONFIG_MAP, Some(("7", 1)), Seen::Cached(at("9", 1)), ReadFirst(ReadReason::UncheckedVersion)),
    // What a read returned.
    ("a child the read did not find is created",
        SERVICE, Some(("7", 1)), Seen::Read(None), Write(WriteReason::Missing)),
    ("a live object at the version our write produced is trusted, though the server normalized it",
        DEPLOYMENT, Some(("7", 1)), Seen::Read(Some(at("7", 1).with(Edit::OtherLabel))), Skip(SkipReason::KnownVersion)),
    ("a live object holding all we want beside the server's own fields is trusted",
        DEPLOYMENT, None, Seen::Read(Some(at("9", 1).with(Edit::ServerFields))), Skip(SkipReason::LiveHoldsAll)),
    ("a live object applied from other content is written",
        CONFIG_MAP, Some(("7", 1)), Seen::Read(Some(at("7", 1).with(Edit::OtherMark))), Write(WriteReason::Changed)),
    ("a live object that drifted is written",
        CONFIG_MAP, Some(("7", 1)), Seen::Read(Some(at("9", 1).with(Edit::OtherLabel))), Write(WriteReason::Drifted)),
];

#[test]
fn the_decision_table() {
    for (name, judge, memo, seen, want) in TABLE {
        assert_eq!(judge(*memo, seen), *want, "{name}");
    }
}

#[test]
fn after_a_read_nothing_is_read_again() {
    for (name, judge, memo, seen, _) in TABLE {
        if matches!(seen, Seen::Read(_)) {
            assert!(!matches!(judge(*memo, seen), ReadFirst(_)), "{name}");
        }
    }
}

#[test]
fn a_skip_teaches_the_memo_every_version_but_the_one_it_holds() {
    assert!(!SkipReason::KnownVersion.is_news_to_memo());
    for reason in [
        SkipReason::KnownSpec,
        SkipReason::CacheHoldsAll,
        SkipReason::LiveHoldsAll,
    ] {
        assert!(reason.is_news_to_memo(), "{reason:?}");
    }
}

#[test]
fn the_mark_is_the_content_hash_of_the_unmarked_object() {
    let desired = desired::<Service>();
    let (marked, wanted) = Wanted::mark(&desired).expect("serializes");
    let unmarked = serde_json::to_string(&desired).expect("serializes");
    assert_eq!(wanted.hash(), content_hash_value([unmarked.as_str()]));
    let annotations = marked.metadata.annotations.expect("marked");
    assert_eq!(annotations[APPLIED_HASH], hex(wanted.hash()));
}

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
