//! What every reconcile shares: the client, metrics, the Event recorder, what the operator
//! knows of its children (`known_state`), and the failure counts behind the retry backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::known_state::KnownState;
use super::validate::ApiServer;
use crate::metrics::Metrics;

/// First retry after a failure; doubled per consecutive failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_secs(5);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What every reconcile shares; one per operator process, built by `main` (or a test) and
/// handed to [`run`](super::run).
pub struct Context {
    pub(crate) client: Client,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) recorder: Recorder,
    /// The write memo and the children's cache.
    pub(super) known: KnownState,
    /// Consecutive failures per IotMonitor (`namespace/name`), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The API server's endpoints, read once when the controller starts (see
    /// [`api_server`](super::api_server)); unset or `None`: not known.
    api_server: OnceLock<Option<ApiServer>>,
}

impl Context {
    /// A context whose API requests go through `client`, whose reconciles are counted in
    /// `metrics`, and whose Events name `reporter` as their source.
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            known: KnownState::default(),
            failures: Mutex::new(HashMap::new()),
            api_server: OnceLock::new(),
        }
    }

    /// Records where the API server answers (once; later calls change nothing).
    pub(super) fn set_api_server(&self, api_server: Option<ApiServer>) {
        let _ = self.api_server.set(api_server);
    }

    /// Where the API server answers, if known.
    pub(super) fn api_server(&self) -> Option<ApiServer> {
        self.api_server.get().cloned().flatten()
    }

    /// One more consecutive failure of `key`; returns the count.
    pub(super) fn failed(&self, key: &str) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 1;
        };
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// A success of `key` ends its run of failures.
    pub(super) fn succeeded(&self, key: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }
}

/// Exponential backoff: 5 s, 10 s, 20 s … capped at 5 minutes. Errors only the user can fix
/// wait for a change of the IotMonitor (or the periodic resync).
pub(super) fn backoff(failures: u32, needs_user_action: bool) -> Duration {
    if needs_user_action {
        return MAX_BACKOFF;
    }
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs = |n| backoff(n, false).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(4)], [5, 10, 20, 40]);
        assert_eq!(secs(10), 300);
        assert_eq!(secs(u32::MAX), 300);
    }

    #[test]
    fn errors_only_the_user_can_fix_wait_longest() {
        assert_eq!(backoff(1, true), MAX_BACKOFF);
    }
}
