//! The reconcile pipeline: `validate (pure) → desired (pure) → apply (client) → status`.
//!
//! Children are garbage-collected through owner references, so deletion needs no finalizer;
//! the data volume and its credentials carry no owner reference unless the spec asks for it.

pub mod apply;
pub mod desired;
pub mod hash;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use self::apply::{Applier, FIELD_MANAGER, WriteMemo};
use self::desired::labels::{INSTANCE, MANAGED_BY, MANAGER};
use self::validate::{InfluxMode, ValidatedMonitor};
use crate::crd::{IotMonitor, IotMonitorStatus};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Periodic re-check even when nothing changed: catches drift in objects we do not watch
/// (the user's external credentials Secret).
const RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failure; doubled per consecutive failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub reporter: Reporter,
    memo: WriteMemo,
    /// Consecutive failures per IotMonitor (`namespace/name`), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, reporter: Reporter) -> Self {
        Self {
            client,
            metrics,
            reporter,
            memo: WriteMemo::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failure_count(&self, key: &str, bump: bool) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 1;
        };
        if bump {
            let n = failures.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            failures.remove(key);
            0
        }
    }
}

fn key(monitor: &IotMonitor) -> String {
    format!(
        "{}/{}",
        monitor.namespace().unwrap_or_default(),
        monitor.name_any()
    )
}

/// Exponential backoff: 5 s, 10 s, 20 s … capped at 5 minutes. Errors only the user can fix
/// wait for a change of the IotMonitor (or the periodic resync).
pub fn backoff(failures: u32, needs_user_action: bool) -> Duration {
    if needs_user_action {
        return MAX_BACKOFF;
    }
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

fn error_policy(monitor: Arc<IotMonitor>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failure_count(&key(&monitor), true);
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

async fn reconcile(monitor: Arc<IotMonitor>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.start_reconcile();
    let result = reconcile_monitor(&monitor, &ctx).await;
    match &result {
        Ok(_) => {
            ctx.metrics.record_success();
            ctx.failure_count(&key(&monitor), false);
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

async fn reconcile_monitor(monitor: &IotMonitor, ctx: &Context) -> Result<Action> {
    if monitor.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the owned children.
        return Ok(Action::await_change());
    }
    let model = validate::validate(monitor)?;
    let generation = monitor.metadata.generation;
    if model.paused {
        let status = status::paused(monitor.status.as_ref(), generation, now());
        patch_status(monitor, ctx, &status).await?;
        return Ok(Action::await_change());
    }
    if model.influx.mode == InfluxMode::External {
        check_external_credentials(&model, ctx).await?;
    }

    let desired = desired::build(&model);
    let owner_uid = model.owner.uid.clone();
    let applier = Applier::new(
        ctx.client.clone(),
        &model.namespace,
        &model.names.instance,
        &owner_uid,
        &ctx.metrics,
        &ctx.memo,
    );
    let applied = applier.apply_all(desired).await?;

    let status = status::reconciled(&model, &applied, monitor.status.as_ref(), generation, now());
    patch_status(monitor, ctx, &status).await?;
    if applied.writes > 0 {
        let mut note = format!("made {} change(s) to the stack", applied.writes);
        if !applied.deleted.is_empty() {
            note.push_str(&format!(", deleting {}", applied.deleted.join(", ")));
        }
        publish(monitor, ctx, EventType::Normal, "Reconciled", note).await;
    }
    Ok(Action::requeue(RESYNC))
}

/// The external credentials Secret must exist with both keys, or every pod would fail to
/// start with an error far from its cause.
async fn check_external_credentials(model: &ValidatedMonitor, ctx: &Context) -> Result<()> {
    let creds = &model.influx.writer;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &model.namespace);
    let secret = api
        .get_opt(&creds.secret)
        .await
        .map_err(|source| Error::Read {
            what: format!("Secret {}", creds.secret),
            source,
        })?;
    let missing = |problem: String| Error::MissingCredentials {
        name: creds.secret.clone(),
        problem,
    };
    let secret = secret.ok_or_else(|| {
        missing("does not exist; create it or fix spec.influxdb.external.credentialsSecret".into())
    })?;
    let data = secret.data.unwrap_or_default();
    for key in [&creds.username_key, &creds.password_key] {
        if !data.contains_key(key) {
            return Err(missing(format!("has no key {key:?}")));
        }
    }
    Ok(())
}

/// Writes the status only when it changed: an idle reconcile writes nothing.
async fn patch_status(
    monitor: &IotMonitor,
    ctx: &Context,
    status: &IotMonitorStatus,
) -> Result<()> {
    if monitor.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<IotMonitor> =
        Api::namespaced(ctx.client.clone(), &monitor.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": IotMonitor::api_version(&()),
        "kind": IotMonitor::kind(&()),
        "status": status,
    });
    api.patch_status(
        &monitor.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    ctx.metrics.record_write("IotMonitor", "status");
    Ok(())
}

/// Best effort: a failure to report a failure is logged, not escalated.
async fn report_failure(monitor: &IotMonitor, ctx: &Context, err: &Error) {
    let status = status::failed(
        monitor.status.as_ref(),
        monitor.metadata.generation,
        err.category(),
        err.to_string(),
        now(),
    );
    if let Err(status_err) = patch_status(monitor, ctx, &status).await {
        tracing::warn!(error = %status_err, "cannot record the failure in the status");
    }
    publish(
        monitor,
        ctx,
        EventType::Warning,
        err.category(),
        err.to_string(),
    )
    .await;
}

async fn publish(
    monitor: &IotMonitor,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    match recorder.publish(&event, &monitor.object_ref(&())).await {
        Ok(()) => ctx.metrics.record_write("Event", "create"),
        Err(err) => tracing::warn!(error = %err, "cannot publish an Event"),
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The IotMonitor a labelled child belongs to (for children without an owner reference).
fn owner_by_label<K: Resource>(child: K) -> Option<ObjectRef<IotMonitor>> {
    let instance = child.labels().get(INSTANCE)?.clone();
    let namespace = child.meta().namespace.clone()?;
    Some(ObjectRef::new(&instance).within(&namespace))
}

/// Runs the controller until `shutdown` resolves. `namespace` limits every watch (and so the
/// RBAC the operator needs) to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = &ctx.client;
    let ns = namespace.as_deref();
    // Only our own children are cached, not every Deployment of the cluster.
    let children = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    Controller::new(scoped::<IotMonitor>(client, ns), watcher::Config::default())
        .owns(scoped::<Deployment>(client, ns), children.clone())
        .owns(scoped::<StatefulSet>(client, ns), children.clone())
        .owns(scoped::<Service>(client, ns), children.clone())
        .owns(scoped::<ConfigMap>(client, ns), children.clone())
        .owns(
            scoped::<HorizontalPodAutoscaler>(client, ns),
            children.clone(),
        )
        .owns(scoped::<NetworkPolicy>(client, ns), children.clone())
        // The Secret and the claim may have no owner reference (they outlive the monitor).
        .watches(
            scoped::<Secret>(client, ns),
            children.clone(),
            owner_by_label,
        )
        .watches(
            scoped::<PersistentVolumeClaim>(client, ns),
            children,
            owner_by_label,
        )
        .with_config(ControllerConfig::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(monitor = %object, "reconciled"),
                Err(err) => tracing::debug!(error = %err, "controller event"),
            }
        })
        .await;
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
