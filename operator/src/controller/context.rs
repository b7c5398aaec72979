//! What every reconcile shares: the client, metrics, the Event recorder, what the operator
//! knows of its children (`known_state`), and the failure counts behind the retry backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use super::apply::monitoring::MonitoringMemo;
use super::known_state::KnownState;
use super::storage::{InfluxClient, StorageMemo};
use super::validate::ApiServer;
use crate::metrics::Metrics;

/// First retry after a failure; doubled per consecutive failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_secs(5);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How often discovery is asked again whether the Prometheus operator's CRDs exist: they are
/// installed rarely, and a minute's delay costs nothing.
const PROMETHEUS_DISCOVERY: Duration = Duration::from_secs(60);

/// How often a monitor's storage is measured by default: a forecast of days needs no more, and
/// at a thousand monitors it is three small requests a second.
const STORAGE_EVERY: Duration = Duration::from_secs(300);

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
    /// The ConfigMaps labelled `iot.operator.dev/alert-rules`, kept by their watch; unset until
    /// the controller runs.
    rule_maps: RwLock<Option<Store<ConfigMap>>>,
    /// The cluster serves the Prometheus operator's kinds (discovery, re-checked periodically).
    prometheus_operator: AtomicBool,
    /// What this process last wrote of the ServiceMonitors and PrometheusRules.
    pub(super) monitoring_memo: MonitoringMemo,
    /// How often discovery is asked whether the Prometheus operator's kinds exist; `None`: never
    /// (the Prometheus path off).
    pub(super) prometheus_discovery: Option<Duration>,
    /// The API server's endpoints, read once when the controller starts (see
    /// [`api_server`](super::api_server)); unset or `None`: not known.
    api_server: OnceLock<Option<ApiServer>>,
    /// How often each monitor's storage is measured; `None`: never.
    pub(super) storage_every: Option<Duration>,
    /// The last storage sample of each monitor, and what autoGrow asked for.
    pub(super) storage: StorageMemo,
    /// The HTTP client that reads InfluxDB's statistics.
    pub(super) influx: InfluxClient,
    /// The namespace the operator's pods run in (the stacks' NetworkPolicies admit them to
    /// InfluxDB); `None`: not known.
    pub(super) operator_namespace: Option<String>,
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
            rule_maps: RwLock::new(None),
            prometheus_operator: AtomicBool::new(false),
            monitoring_memo: MonitoringMemo::default(),
            prometheus_discovery: Some(PROMETHEUS_DISCOVERY),
            api_server: OnceLock::new(),
            storage_every: Some(STORAGE_EVERY),
            storage: StorageMemo::default(),
            influx: InfluxClient::default(),
            operator_namespace: None,
        }
    }

    /// Measures each monitor's storage every `every` (default 5 minutes), or never with `None`.
    pub fn with_storage_every(mut self, every: Option<Duration>) -> Self {
        self.storage_every = every;
        self
    }

    /// The namespace the operator's pods run in, which each stack's InfluxDB policy admits.
    pub fn with_operator_namespace(mut self, namespace: Option<String>) -> Self {
        self.operator_namespace = namespace;
        self
    }

    /// Asks discovery every `every` whether the Prometheus operator's kinds exist (default
    /// every minute), or never with `None`.
    pub fn with_prometheus_discovery(mut self, every: Option<Duration>) -> Self {
        self.prometheus_discovery = every;
        self
    }

    pub(super) fn prometheus_operator(&self) -> bool {
        self.prometheus_operator.load(Ordering::Relaxed)
    }

    /// Records what discovery found; true when it changed.
    pub(super) fn set_prometheus_operator(&self, present: bool) -> bool {
        let changed = self.prometheus_operator.swap(present, Ordering::Relaxed) != present;
        if changed {
            self.monitoring_memo.clear();
        }
        changed
    }

    /// The store of the labelled alert-rule ConfigMaps (a cheap clone of a shared reader).
    pub(super) fn rule_maps(&self) -> Option<Store<ConfigMap>> {
        self.rule_maps.read().ok().and_then(|s| s.clone())
    }

    pub(super) fn set_rule_maps(&self, store: Store<ConfigMap>) {
        if let Ok(mut current) = self.rule_maps.write() {
            *current = Some(store);
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
