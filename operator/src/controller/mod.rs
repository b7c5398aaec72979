//! The reconcile pipeline, driven from here and implemented in one module per step:
//! `dereference (client) → validate (pure) → desired (pure) → apply (client) → status (pure
//! compute, client patch)`.
//!
//! Children are garbage-collected through owner references, so deletion needs no finalizer;
//! the data volume and its credentials carry no owner reference unless the spec asks for it.

// Public: what the binary, the load-test tool and the end-to-end tests use (`run`, `Context`,
// `WatchScope`, and resolving a monitor as the controller does). The rest is internal.
mod api_server;
mod apply;
mod context;
pub mod dereference;
pub mod desired;
mod diagnose;
mod events;
#[cfg(test)]
mod fixtures;
mod hash;
mod known_state;
#[cfg(test)]
mod mock_api;
#[cfg(test)]
mod reconcile_tests;
mod runs;
mod scope;
mod status;
mod storage;
pub mod validate;
mod watches;
mod withdraw;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};

use self::apply::{Applier, ApplyError};
pub use self::context::Context;
use self::context::backoff;
use self::dereference::DereferenceError;
use self::desired::labels::{INSTANCE, MANAGED_BY, MANAGER};
pub use self::scope::WatchScope;
use self::status::{AUTOSCALING, StatusError, patch_status, turned_bad};
use self::validate::InvalidSpec;
use self::watches::Watches;
use crate::constants::{
    ALERT_RULES_LABEL, ALERTING_SECRET_LABEL, BACKUP_SECRET_LABEL, EXTERNAL_CREDENTIALS_LABEL,
    OPT_IN_VALUE,
};
use crate::crd::{IotMonitor, IotMonitorStatus};

/// Periodic re-check even when nothing changed: catches drift in objects we do not watch
/// (the keys of the user's external credentials Secret).
const RESYNC: Duration = Duration::from_secs(300);

/// Re-check while the `Autoscaling` condition is not true. The HPAs' condition changes wake the
/// monitor (see `watches`), but a young HPA's missing metrics turn from `Unknown` into a failure
/// by time alone (`status::autoscaling::METRICS_GRACE_SECONDS`), with no event to wake it.
const AUTOSCALING_RECHECK: Duration = Duration::from_secs(30);

/// Re-check while the monitor is not Ready: a pod that crash-loops changes no child we watch,
/// yet its reason belongs in the status (`diagnose`).
const NOT_READY_RECHECK: Duration = Duration::from_secs(30);

/// A failed reconcile: the error of the step that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
    #[error(transparent)]
    Dereference(#[from] DereferenceError),
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] InvalidSpec),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Status(#[from] StatusError),
}

impl ReconcileError {
    /// CamelCase, fixed set: safe as a metric label, an Event reason and a condition reason.
    pub(crate) fn category(&self) -> &'static str {
        match self {
            Self::Dereference(e) => e.category(),
            Self::InvalidSpec(e) => e.category(),
            Self::Apply(e) => e.category(),
            Self::Status(e) => e.category(),
        }
    }

    /// Errors a retry cannot fix: the user must change the spec first. A missing Secret is
    /// not one of them: creating it is a change the operator does not watch (the user's Secrets
    /// carry none of its labels), so it is looked for again with the usual backoff.
    pub(crate) fn needs_user_action(&self) -> bool {
        matches!(self, Self::InvalidSpec(e) if e.category() != "MissingCredentials")
    }
}

fn key(monitor: &IotMonitor) -> String {
    format!(
        "{}/{}",
        monitor.namespace().unwrap_or_default(),
        monitor.name_any()
    )
}

fn error_policy(monitor: Arc<IotMonitor>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let failures = ctx.failed(&key(&monitor));
    let delay = backoff(failures, error.needs_user_action());
    tracing::warn!(
        monitor = %key(&monitor),
        category = error.category(),
        failures,
        retry_in_s = delay.as_secs(),
        error = %error,
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn reconcile(monitor: Arc<IotMonitor>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let _timer = ctx.metrics.start_reconcile();
    let result = reconcile_monitor(&monitor, &ctx).await;
    match &result {
        Ok(_) => {
            ctx.metrics.record_success();
            ctx.succeeded(&key(&monitor));
        }
        Err(err) => {
            ctx.metrics.record_error(err.category());
            report_failure(&monitor, &ctx, err).await;
        }
    }
    result
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// One pass of the pipeline over one IotMonitor.
pub(crate) async fn reconcile_monitor(
    monitor: &IotMonitor,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    if monitor.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the owned children.
        return Ok(Action::await_change());
    }
    let rule_maps = ctx.rule_maps();
    let refs = dereference::dereference(
        &ctx.client,
        monitor,
        rule_maps.as_ref(),
        ctx.prometheus_operator(),
    )
    .await?;
    let model = match validate::validate(monitor, &refs) {
        Ok(model) => model
            .with_api_server(ctx.api_server())
            .with_operator_namespace(ctx.operator_namespace.clone())
            .with_restore_status(monitor.status.as_ref().and_then(|s| s.restore.as_ref())),
        Err(invalid) => {
            if let Some(secret) = invalid.withdrawn_secret() {
                let deleted =
                    withdraw::delete_readers(&ctx.client, &ctx.metrics, monitor, secret).await?;
                if !deleted.is_empty() {
                    let note = format!(
                        "Secret {secret} no longer allows its use: deleted {} (built again once it does)",
                        deleted.join(", ")
                    );
                    events::publish(
                        ctx,
                        monitor,
                        EventType::Warning,
                        "CredentialsWithdrawn",
                        note,
                    )
                    .await;
                }
            }
            return Err(invalid.into());
        }
    };
    let generation = monitor.metadata.generation;
    if model.paused {
        let status = status::paused(monitor.status.as_ref(), generation, now());
        patch_status(&ctx.client, &ctx.metrics, monitor, &status).await?;
        return Ok(Action::await_change());
    }

    let cache = ctx.known.cache();
    let model = keep_claim_size(model, &cache, ctx);
    let desired = desired::build(&model);
    let memo = ctx.known.memo();
    let applier = Applier::new(ctx.client.clone(), &model, &ctx.metrics, memo, &cache);
    let mut applied = applier.apply_all(desired).await?;
    let monitoring = desired::prometheus::build(&model);
    applied.writes += apply::monitoring::apply(
        &ctx.client,
        &model,
        monitoring.as_ref(),
        &ctx.monitoring_memo,
        &ctx.metrics,
    )
    .await?;
    let now = now();
    applied.influxdb_trouble =
        diagnose::influxdb_trouble(&ctx.client, &model, &applied.stateful_sets, &now).await;
    applied.runs = runs::read(&ctx.client, &model, &applied.jobs, monitor.status.as_ref()).await;

    let measurement = match ctx.storage_every {
        Some(every) => {
            storage::check(
                &storage::Tools {
                    client: &ctx.client,
                    influx: &ctx.influx,
                    memo: &ctx.storage,
                    metrics: &ctx.metrics,
                },
                every,
                &model,
                &applied.stateful_sets,
                &applied.services,
            )
            .await
        }
        None => None,
    };
    let previous = monitor.status.as_ref();
    let mut status = status::reconciled(&model, &applied, previous, generation, now.clone());
    status::storage::set(
        &mut status,
        &model,
        previous.and_then(|p| p.storage.as_ref()),
        measurement.as_ref(),
        generation,
        &now,
    );
    patch_status(&ctx.client, &ctx.metrics, monitor, &status).await?;
    if let Some(storage::GrowOutcome::Grew { from, to }) =
        measurement.as_ref().and_then(|m| m.grow.as_ref())
    {
        let note = format!(
            "autoGrow: the volume is expected to fill within 7 days; claim {} asks for {to} (was {from})",
            model.names.influxdb_data
        );
        events::publish(ctx, monitor, EventType::Normal, "VolumeGrown", note).await;
    }
    if let Some(soon) = status::storage::turned_true(
        storage_condition(previous),
        storage_condition(Some(&status)),
    ) {
        let (reason, note) = (soon.reason.clone(), soon.message.clone());
        events::publish(ctx, monitor, EventType::Warning, &reason, note).await;
    }
    if applied.writes > 0 {
        let mut note = format!("made {} change(s) to the stack", applied.writes);
        if !applied.deleted.is_empty() {
            note.push_str(&format!(", deleting {}", applied.deleted.join(", ")));
        }
        events::publish(ctx, monitor, EventType::Normal, "Reconciled", note).await;
    }
    for (reason, note) in events::device_key_events(&applied.device_keys) {
        events::publish(ctx, monitor, EventType::Normal, reason, note).await;
    }
    for (reason, note) in status::backup_warnings(monitor.status.as_ref(), &status) {
        events::publish(ctx, monitor, EventType::Warning, &reason, note).await;
    }
    let now_autoscaling = autoscaling(Some(&status));
    if let Some(bad) = turned_bad(autoscaling(monitor.status.as_ref()), now_autoscaling) {
        let note = format!("the autoscalers cannot scale: {}", bad.message);
        events::publish(ctx, monitor, EventType::Warning, &bad.reason, note).await;
    }
    Ok(Action::requeue(if !is_true(ready(Some(&status))) {
        NOT_READY_RECHECK
    } else if now_autoscaling.is_some_and(|c| c.status != "True") {
        AUTOSCALING_RECHECK
    } else {
        // The storage is measured from a reconcile: come back when the next one is due.
        ctx.storage_every.map_or(RESYNC, |every| every.min(RESYNC))
    }))
}

/// The model whose data claim asks for what the claim already asks for when that is more than
/// `storage.size` (grown by autoGrow, or by hand): a claim can never shrink.
fn keep_claim_size(
    mut model: validate::ValidatedMonitor,
    cache: &known_state::ChildCache,
    ctx: &Context,
) -> validate::ValidatedMonitor {
    let seen = cache
        .seen::<PersistentVolumeClaim>(&model.namespace, &model.names.influxdb_data)
        .into_object()
        .and_then(|claim| claim.spec?.resources?.requests?.remove("storage"))
        .map(|q| q.0);
    let grown = ctx.storage.grown_to(&storage::key(&model));
    if let validate::InfluxMode::Internal(internal) = &mut model.influx.mode {
        for current in [seen, grown].into_iter().flatten() {
            internal.storage_size = storage::kept_size(&internal.storage_size, Some(&current));
        }
    }
    model
}

fn storage_condition(status: Option<&IotMonitorStatus>) -> Option<&Condition> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == status::storage::STORAGE_EXHAUSTED_SOON)
}

fn is_true(condition: Option<&Condition>) -> bool {
    condition.is_some_and(|c| c.status == "True")
}

fn ready(status: Option<&IotMonitorStatus>) -> Option<&Condition> {
    status?.conditions.iter().find(|c| c.type_ == status::READY)
}

fn autoscaling(status: Option<&IotMonitorStatus>) -> Option<&Condition> {
    status?.conditions.iter().find(|c| c.type_ == AUTOSCALING)
}

/// Best effort: a failure to report a failure is logged, not escalated.
async fn report_failure(monitor: &IotMonitor, ctx: &Context, err: &ReconcileError) {
    let status = status::failed(
        monitor.status.as_ref(),
        monitor.metadata.generation,
        err.category(),
        err.to_string(),
        now(),
    );
    if let Err(status_err) = patch_status(&ctx.client, &ctx.metrics, monitor, &status).await {
        tracing::warn!(error = %status_err, "cannot record the failure in the status");
    }
    events::publish(
        ctx,
        monitor,
        EventType::Warning,
        err.category(),
        err.to_string(),
    )
    .await;
}

/// The IotMonitor a labelled child belongs to (for children without an owner reference).
fn owner_by_label<K: Resource>(child: K) -> Option<ObjectRef<IotMonitor>> {
    let instance = child.labels().get(INSTANCE)?.clone();
    let namespace = child.meta().namespace.clone()?;
    Some(ObjectRef::new(&instance).within(&namespace))
}

/// The IotMonitor a labelled alert-rule ConfigMap names.
fn monitor_of_rule_map(config_map: ConfigMap) -> Option<ObjectRef<IotMonitor>> {
    let monitor = config_map.labels().get(ALERT_RULES_LABEL)?.clone();
    let namespace = config_map.metadata.namespace?;
    Some(ObjectRef::new(&monitor).within(&namespace))
}

/// Reconciles at once. While every slot is busy kube-runtime holds the other requests in a set
/// it drains in hash order, not oldest first: with few slots and a steady stream of triggers the
/// same monitors win again and again (starvation). With the triggers filtered (`watches`) the set
/// drains; more slots mostly queue at the API server and cost memory (a connection each).
pub(crate) const CONCURRENCY: u16 = 16;

/// Bursts of events about one monitor (its children appearing one by one, a rollout's status
/// steps) become one reconcile: each request waits this long for more.
pub(crate) const DEBOUNCE: Duration = Duration::from_secs(1);

/// Runs the controller until `shutdown` resolves. `scope` limits every watch (and so the RBAC
/// the operator needs) to one namespace, or not.
pub async fn run(
    ctx: Arc<Context>,
    scope: WatchScope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = &ctx.client;
    ctx.set_api_server(api_server::discover(client).await);
    // Only our own children are cached, not every Deployment of the cluster.
    let children = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let mut watches = Watches::new(children, ctx.known.memo().clone());
    let deployments = watches.watch(scope.api::<Deployment>(client));
    let stateful_sets = watches.watch(scope.api::<StatefulSet>(client));
    let services = watches.watch(scope.api::<Service>(client));
    let config_maps = watches.watch(scope.api::<ConfigMap>(client));
    let autoscalers = watches.watch(scope.api::<HorizontalPodAutoscaler>(client));
    let policies = watches.watch(scope.api::<NetworkPolicy>(client));
    let secrets = watches.watch(scope.api::<Secret>(client));
    let claims = watches.watch(scope.api::<PersistentVolumeClaim>(client));
    let service_accounts = watches.watch(scope.api::<ServiceAccount>(client));
    let roles = watches.watch(scope.api::<Role>(client));
    let role_bindings = watches.watch(scope.api::<RoleBinding>(client));
    let cron_jobs = watches.watch(scope.api::<CronJob>(client));
    let jobs = watches.watch(scope.api::<Job>(client));
    ctx.known.set_cache(watches.into_cache());

    // The user's Secrets that opt in, as external credentials or for alerting: labelling one,
    // or taking the label off, wakes the monitors that name it at once rather than at the next
    // resync. Only the labelled ones are watched (one watch per label: a selector cannot say
    // "either label"); nothing of them is kept.
    let opted_in = |label: &str| {
        let config = watcher::Config::default().labels(&format!("{label}={OPT_IN_VALUE}"));
        watcher(scope.api::<Secret>(client), config).touched_objects()
    };
    let external_secrets = opted_in(EXTERNAL_CREDENTIALS_LABEL);
    let alerting_secrets = opted_in(ALERTING_SECRET_LABEL);
    let backup_secrets = opted_in(BACKUP_SECRET_LABEL);

    // The users' alert-rule ConfigMaps: not ours (no managed-by label), found by their own
    // label, whose value names the monitor they belong to. A change wakes that monitor.
    let (rule_maps, rule_writer) = reflector::store();
    let rule_map_changes = watcher(
        scope.api::<ConfigMap>(client),
        watcher::Config::default().labels(ALERT_RULES_LABEL),
    )
    .modify(|cm| cm.metadata.managed_fields = None)
    .reflect(rule_writer)
    .touched_objects();
    ctx.set_rule_maps(rule_maps);

    // The Prometheus path: whether the cluster has the Prometheus operator's kinds, known
    // before the first reconcile and re-checked periodically; a change re-reconciles every
    // monitor, so their ServiceMonitor and PrometheusRule appear when the CRDs do.
    let (prometheus_changed, prometheus_changes) = futures::channel::mpsc::channel(1);
    let discovery = ctx.prometheus_discovery.map(|every| {
        tokio::spawn(watch_prometheus_operator(
            ctx.clone(),
            every,
            prometheus_changed,
        ))
    });
    if discovery.is_some() {
        check_prometheus_operator(&ctx).await;
    }

    // Our own status writes change the monitor too; only spec changes (generation) wake it.
    // Its managed fields (twice the rest of the object) are of no use here: not kept.
    let (monitors, writer) = reflector::store();
    let monitor_changes = watcher(scope.api::<IotMonitor>(client), watcher::Config::default())
        .modify(|monitor| monitor.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());

    let naming = monitors.clone();
    let naming_alerting = monitors.clone();
    let naming_backup = monitors.clone();
    Controller::for_stream(monitor_changes, monitors)
        .owns_stream(deployments)
        .owns_stream(stateful_sets)
        .owns_stream(services)
        .owns_stream(config_maps)
        .owns_stream(autoscalers)
        .owns_stream(policies)
        .owns_stream(service_accounts)
        .owns_stream(roles)
        .owns_stream(role_bindings)
        .owns_stream(cron_jobs)
        // The backup runs are the CronJob's (not the monitor's): found by the monitor's label.
        .watches_stream(jobs, owner_by_label)
        // The credentials Secret and the claim may have no owner reference (they outlive the
        // monitor). Every change of the devices Secret wakes its monitor too: a key deleted
        // there is rotated.
        .watches_stream(secrets, owner_by_label)
        .watches_stream(claims, owner_by_label)
        .watches_stream(external_secrets, move |secret| {
            let monitors = naming.state();
            dereference::monitors_naming(monitors.iter().map(|m| m.as_ref()), &secret)
        })
        .watches_stream(alerting_secrets, move |secret| {
            let monitors = naming_alerting.state();
            dereference::monitors_naming(monitors.iter().map(|m| m.as_ref()), &secret)
        })
        .watches_stream(backup_secrets, move |secret| {
            let monitors = naming_backup.state();
            dereference::monitors_naming(monitors.iter().map(|m| m.as_ref()), &secret)
        })
        .watches_stream(rule_map_changes, monitor_of_rule_map)
        .reconcile_all_on(prometheus_changes)
        .with_config(
            ControllerConfig::default()
                .concurrency(CONCURRENCY)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(monitor = %object, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "controller event"),
            }
        })
        .await;
    if let Some(discovery) = discovery {
        discovery.abort();
    }
}

/// Asks discovery once; true when the answer changed. An error keeps the last answer.
async fn check_prometheus_operator(ctx: &Context) -> bool {
    match dereference::prometheus_operator_present(&ctx.client).await {
        Ok(present) => {
            let changed = ctx.set_prometheus_operator(present);
            if changed {
                tracing::info!(
                    present,
                    "the Prometheus operator's ServiceMonitor and PrometheusRule kinds"
                );
            }
            changed
        }
        Err(error) => {
            tracing::warn!(%error, "cannot ask discovery for monitoring.coreos.com/v1");
            false
        }
    }
}

/// Re-checks periodically; a change wakes every monitor through `changed`.
async fn watch_prometheus_operator(
    ctx: Arc<Context>,
    every: Duration,
    mut changed: futures::channel::mpsc::Sender<()>,
) {
    loop {
        tokio::time::sleep(every).await;
        if check_prometheus_operator(&ctx).await && changed.try_send(()).is_err() {
            // Full: a wake-up is already pending, which is all that is needed.
        }
    }
}
