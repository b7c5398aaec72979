//! Whether to write a child, skip it, or read it first: a pure function of what we want it to
//! hold, what the memo remembers of it, and what we see of it in the cluster. The apply step
//! performs what the decision asks for (`Applier::apply`).

use std::collections::BTreeMap;

use kube::Resource;
use serde::Serialize;
use serde_json::Value;

use super::cache::{Cached, Seen};
use super::memo::Remembered;
use crate::controller::hash::{content_hash_value, hex};

/// Annotation holding the content hash of what the operator last applied, on every applied
/// object: a cached or live copy that carries the hash we would apply was last applied from the
/// same content.
pub(crate) const APPLIED_HASH: &str = "iot.operator.dev/applied-hash";

/// What the apply step wants a child to hold: the desired object's content hash, and the
/// object as it is sent (marked with that hash), as JSON for the comparisons.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    hash: u64,
    hex: String,
    json: Value,
}

impl Wanted {
    /// `desired` marked with its content hash ([`APPLIED_HASH`]): the object to send, and what
    /// to compare with.
    pub(crate) fn mark<K: Resource + Serialize + Clone>(
        desired: &K,
    ) -> Result<(K, Wanted), serde_json::Error> {
        let hash = content_hash_value([serde_json::to_string(desired)?.as_str()]);
        let hex = hex(hash);
        let mut marked = desired.clone();
        marked
            .meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(APPLIED_HASH.to_owned(), hex.clone());
        let json = serde_json::to_value(&marked)?;
        Ok((marked, Wanted { hash, hex, json }))
    }

    /// The content hash, as the memo remembers it.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// `object` was last applied from this very content.
    fn marks<K: Resource>(&self, object: &K) -> bool {
        let annotations = object.meta().annotations.as_ref();
        annotations.and_then(|a| a.get(APPLIED_HASH)) == Some(&self.hex)
    }
}

/// What to do about one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send nothing: the cluster holds what we want.
    Skip(SkipReason),
    /// Send the server-side apply.
    Write(WriteReason),
    /// What we know does not settle it: read the live object, then decide again.
    ReadFirst(ReadReason),
}

/// Why nothing needs to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// It is at the very version we wrote or checked.
    KnownVersion,
    /// Only its status moved since: its spec is at the generation we know, and its metadata
    /// still holds ours (a rollout's progress).
    KnownSpec,
    /// Its cached copy, of a kind whose cache keeps all we apply, holds all we want (an HPA
    /// after the HPA controller's status writes, a claim once bound).
    CacheHoldsAll,
    /// The live object holds all we want.
    LiveHoldsAll,
}

impl SkipReason {
    /// The memo learns the version seen: it was not the one remembered.
    pub(crate) fn is_news_to_memo(self) -> bool {
        self != SkipReason::KnownVersion
    }
}

/// Why the apply is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteReason {
    /// The synced cache has never seen it and we never wrote it: created without a read (a
    /// first reconcile reads nothing).
    New,
    /// The read found no such child.
    Missing,
    /// It was last applied from other content: the spec changed, or someone edited the mark.
    Changed,
    /// It carries our mark but no longer holds all we want: someone edited it.
    Drifted,
}

impl WriteReason {
    /// For the log.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WriteReason::New | WriteReason::Missing => "creating",
            WriteReason::Changed => "applying a change",
            WriteReason::Drifted => "correcting drift",
        }
    }
}

/// Why what is known does not settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadReason {
    /// The cache cannot tell: the kind is not cached, or not listed yet.
    NotCached,
    /// We wrote it, but the cache does not show it: the watch lags, or it was deleted since.
    WrittenButNotCached,
    /// The cached copy was last applied from other content.
    OtherContent,
    /// The cached copy carries our mark, at a version nobody checked, and the cache cannot
    /// settle it (its copy is pruned, or the spec may have changed).
    UncheckedVersion,
}

/// What to do about a child, from what we want it to hold, what the memo remembers of it
/// (`remembered`), and what we see of it (`seen`: the cache's view, or what a read returned).
/// After a read it never asks to read again. An error only if an object does not serialize.
pub(crate) fn decide<K: Cached>(
    wanted: &Wanted,
    remembered: Option<&Remembered>,
    seen: &Seen<K>,
) -> Result<Decision, serde_json::Error> {
    Ok(match seen {
        Seen::Unknown => Decision::ReadFirst(ReadReason::NotCached),
        Seen::Absent if remembered.is_none() => Decision::Write(WriteReason::New),
        Seen::Absent => Decision::ReadFirst(ReadReason::WrittenButNotCached),
        Seen::Cached(cached) => judge_cached(wanted, remembered, cached)?,
        Seen::Read(None) => Decision::Write(WriteReason::Missing),
        Seen::Read(Some(live)) => judge_live(wanted, remembered, live)?,
    })
}

/// A cached copy: trusted where the memo or the copy itself settles it, else read.
fn judge_cached<K: Cached>(
    wanted: &Wanted,
    remembered: Option<&Remembered>,
    cached: &K,
) -> Result<Decision, serde_json::Error> {
    let meta = cached.meta();
    if !wanted.marks(cached) {
        return Ok(Decision::ReadFirst(ReadReason::OtherContent));
    }
    if remembered.is_some_and(|r| r.is_version(wanted.hash, meta)) {
        return Ok(Decision::Skip(SkipReason::KnownVersion));
    }
    // The metadata is compared right here: a label edited away keeps the generation.
    if K::GENERATION_TRACKS_SPEC
        && remembered.is_some_and(|r| r.is_spec(wanted.hash, meta))
        && is_subset(&wanted.json["metadata"], &serde_json::to_value(meta)?)
    {
        return Ok(Decision::Skip(SkipReason::KnownSpec));
    }
    if K::CACHE_KEEPS_APPLIED && is_subset(&wanted.json, &serde_json::to_value(cached)?) {
        return Ok(Decision::Skip(SkipReason::CacheHoldsAll));
    }
    Ok(Decision::ReadFirst(ReadReason::UncheckedVersion))
}

/// The live object, just read: skipped only if it holds what we want.
fn judge_live<K: Cached>(
    wanted: &Wanted,
    remembered: Option<&Remembered>,
    live: &K,
) -> Result<Decision, serde_json::Error> {
    if !wanted.marks(live) {
        return Ok(Decision::Write(WriteReason::Changed));
    }
    // Values the API server normalizes (quantities, fields a cluster does not support) are
    // never held verbatim: the version our write produced is trusted as it is.
    if remembered.is_some_and(|r| r.is_version(wanted.hash, live.meta())) {
        return Ok(Decision::Skip(SkipReason::KnownVersion));
    }
    if is_subset(&wanted.json, &serde_json::to_value(live)?) {
        return Ok(Decision::Skip(SkipReason::LiveHoldsAll));
    }
    Ok(Decision::Write(WriteReason::Drifted))
}

/// Whether every field of `desired` is present with the same value in `live`. Lists must have
/// the same length; fields only `live` has (defaults, other managers) do not matter.
fn is_subset(desired: &Value, live: &Value) -> bool {
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
mod tests;
