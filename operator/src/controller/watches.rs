//! The watches of the children: one watcher per kind, limited to the operator's own children.
//! Each passes its events to the known state (`known_state::Feed`), which caches the children
//! for the apply step and says which events wake the owning IotMonitor; the stream of those is
//! what the controller is driven by.

use std::sync::Arc;

use futures::{Stream, TryStreamExt, future};
use kube::api::Api;
use kube::runtime::watcher;

use super::known_state::{Cached, ChildCache, Feed, WriteMemo};

/// The watches of one controller run, one per child kind, all limited by one `config`.
pub(super) struct Watches {
    config: watcher::Config,
    cache: ChildCache,
    memo: Arc<WriteMemo>,
}

impl Watches {
    /// Watches whose feeds forget deleted children in `memo`.
    pub(super) fn new(config: watcher::Config, memo: Arc<WriteMemo>) -> Self {
        Self {
            config,
            cache: ChildCache::default(),
            memo,
        }
    }

    /// Watches `api`, feeding the known state; returns the stream of the changes that wake an
    /// owner, for `Controller::owns_stream`.
    pub(super) fn watch<K: Cached>(
        &mut self,
        api: Api<K>,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let mut feed = Feed::new(&mut self.cache, self.memo.clone());
        watcher(api, self.config.clone())
            .try_filter_map(move |event| future::ready(Ok(feed.take(event))))
    }

    /// The stores of every watch made.
    pub(super) fn into_cache(self) -> ChildCache {
        self.cache
    }
}
