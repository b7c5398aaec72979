//! What the operator knows of its children, so that a reconcile with nothing to change sends
//! no request at all: no write, no read, no list. A thousand idle monitors cost the API server
//! nothing.
//!
//! It knows two things: what the cluster holds, from the watches' cache ([`ChildCache`], fed by
//! `controller::watches` through one [`Feed`] per kind), and what the operator itself last
//! wrote or checked, from the write memo ([`WriteMemo`]). From these, [`decide`] says for each
//! child the apply step wants whether to skip it, write it, or read it first: a pure function,
//! whose cases are the table in `decide/tests.rs`. The apply step asks and performs the
//! decision; the watches feed; nothing here sends a request.
//!
//! - `decide`: the decision, and the applied-hash mark it reads.
//! - `memo`: the write memo.
//! - `cache`: one store per kind, and what it shows of a child ([`Seen`]).
//! - `kinds`: what each kind keeps in the cache, and which of its changes matter.
//! - `changes`: the filter that wakes a monitor only for the changes that matter.
//! - `feed`: where a watch's events go.
//! - `packed`: a cached child in little memory.

use std::sync::{Arc, RwLock};

mod cache;
mod changes;
mod decide;
mod feed;
mod kinds;
mod memo;
mod packed;

pub(crate) use self::cache::{Cached, ChildCache, Seen};
pub(crate) use self::decide::{Decision, Wanted, decide};
pub(crate) use self::feed::Feed;
pub(crate) use self::memo::{MemoKey, WriteMemo};

/// What every reconcile shares of this knowledge: the memo, which outlives the controller's
/// runs, and the cache of the current run's watches.
#[derive(Default)]
pub(crate) struct KnownState {
    memo: Arc<WriteMemo>,
    /// Replaced by each run (a new leader term), so a stopped watch's frozen store is never
    /// read.
    cache: RwLock<ChildCache>,
}

impl KnownState {
    pub(crate) fn memo(&self) -> &Arc<WriteMemo> {
        &self.memo
    }

    /// The cache of the running watches (empty before the controller runs: every read then
    /// goes to the API server).
    pub(crate) fn cache(&self) -> ChildCache {
        self.cache.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// The stores of a new run's watches.
    pub(crate) fn set_cache(&self, cache: ChildCache) {
        if let Ok(mut current) = self.cache.write() {
            *current = cache;
        }
    }
}
