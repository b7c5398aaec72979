//! Where one kind's watch events go: into the cache's store (pruned and packed), into the memo
//! (a deleted child is forgotten), and through the change filter, which says whether the event
//! wakes the owner. The watches only pass their events on (`controller::watches`).

use std::sync::Arc;

use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;

use super::cache::{Cached, ChildCache};
use super::changes::ChangeFilter;
use super::memo::{MemoKey, WriteMemo};
use super::packed::{Packed, Packer};

/// Takes the events of one kind's watch.
pub(crate) struct Feed<K: Cached> {
    writer: Writer<Packed<K>>,
    packer: Packer,
    filter: ChangeFilter<K>,
    memo: Arc<WriteMemo>,
}

impl<K: Cached> Feed<K> {
    /// A feed whose store `cache` reads from now on, forgetting deleted children in `memo`.
    pub(crate) fn new(cache: &mut ChildCache, memo: Arc<WriteMemo>) -> Self {
        let writer = Writer::default();
        K::set_store(cache, writer.as_reader());
        Self {
            writer,
            packer: Packer::default(),
            filter: ChangeFilter::new(K::fingerprint),
            memo,
        }
    }

    /// Takes in one watch event; returns the (pruned) object to wake its owner with, if the
    /// event matters.
    pub(crate) fn take(&mut self, event: watcher::Event<K>) -> Option<K> {
        let event = event.modify(K::prune);
        if let watcher::Event::Delete(child) = &event {
            // Of no more use: a child of the same name is a new object.
            self.memo.forget(MemoKey::of_object(child));
        }
        self.writer.apply_watcher_event(&self.packer.event(&event));
        self.filter.admit(event)
    }
}
