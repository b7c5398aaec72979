//! Server-side apply of the desired objects under one field manager, in a deliberate order,
//! then deletion of the children the spec no longer wants.
//!
//! Whether a child needs a write, or a read first, is not decided here: `known_state::decide`
//! says, from the write memo and the watches' cache, and this step performs the read and the
//! write it asks for. So a reconcile with nothing to change sends no request at all.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource};

mod credentials;
mod devices;
mod error;
mod jobs;
pub(crate) mod monitoring;
#[cfg(test)]
mod tests;

pub(crate) use self::devices::KeyEvents;
pub(crate) use self::error::ApplyError;
use super::desired::DesiredObjects;
use super::desired::labels::children_selector;
use super::diagnose::ContainerTrouble;
use super::known_state::{Cached, ChildCache, Decision, MemoKey, Seen, Wanted, WriteMemo, decide};
use super::validate::ValidatedMonitor;
use crate::constants::FIELD_MANAGER;
use crate::metrics::Metrics;

/// The live state of what was applied, for the status step. Objects read from the cache are
/// pruned copies (no pod templates: see `known_state::Cached::prune`), which is all the status
/// needs.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub(crate) stateful_sets: Vec<StatefulSet>,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) services: Vec<Service>,
    pub(crate) autoscalers: Vec<HorizontalPodAutoscaler>,
    /// Objects created, patched or deleted by this reconcile.
    pub(crate) writes: u32,
    pub(crate) deleted: Vec<String>,
    /// Why the InfluxDB pod does not start, when its StatefulSet has stalled (read after the
    /// apply: `diagnose`).
    pub(crate) influxdb_trouble: Option<ContainerTrouble>,
    /// Keys rotated and devices revoked by this reconcile.
    pub(crate) device_keys: KeyEvents,
    /// Every Job of the monitor: the backup runs and the restore (pruned copies).
    pub(crate) jobs: Vec<Job>,
    /// What the finished backup and restore runs said (read after the apply: `runs`).
    pub(crate) runs: super::runs::Runs,
}

/// Applies one monitor's desired objects, asking the known state what each needs.
pub(crate) struct Applier<'a> {
    client: Client,
    namespace: &'a str,
    instance: &'a str,
    owner_uid: &'a str,
    metrics: &'a Metrics,
    memo: &'a WriteMemo,
    cache: &'a ChildCache,
    /// Counted from the applies of a wave, which run at once.
    writes: AtomicU32,
    deleted: Vec<String>,
}

impl<'a> Applier<'a> {
    /// Applies into the namespace of `model`, for the IotMonitor it was validated from,
    /// reading children from `cache` where it holds them.
    pub(crate) fn new(
        client: Client,
        model: &'a ValidatedMonitor,
        metrics: &'a Metrics,
        memo: &'a WriteMemo,
        cache: &'a ChildCache,
    ) -> Self {
        Self {
            client,
            namespace: &model.namespace,
            instance: &model.names.instance,
            owner_uid: &model.owner.uid,
            metrics,
            memo,
            cache,
            writes: AtomicU32::new(0),
            deleted: Vec::new(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.namespace)
    }

    /// Applies everything in three waves, each at once: what the pods read or reach (the
    /// credentials, the device registry, configuration, claims, Services, the NetworkPolicy
    /// before InfluxDB starts, coap-server's account and Role), then the workloads, then their
    /// autoscalers. A first reconcile so waits for the API server three times, not once per
    /// kind.
    pub(crate) async fn apply_all(
        mut self,
        desired: DesiredObjects,
    ) -> Result<Applied, ApplyError> {
        // Destructured without `..`: a new kind of child fails to compile here until it is
        // applied (and, where owned, cleaned up).
        let DesiredObjects {
            credentials,
            devices,
            config_maps,
            persistent_volume_claims,
            services,
            stateful_sets,
            deployments,
            autoscalers,
            network_policies,
            service_accounts,
            roles,
            role_bindings,
            cron_jobs,
            jobs,
        } = desired;

        let (
            (),
            (device_keys, device_places),
            mut config_map_names,
            _,
            live_services,
            policy_names,
            _,
            _,
        ) = futures::try_join!(
            self.ensure_credentials(&credentials),
            self.apply_devices(&devices),
            self.apply_each(&config_maps),
            self.apply_each(&persistent_volume_claims),
            self.apply_live(&services),
            self.apply_each(&network_policies),
            self.apply_each(&service_accounts),
            // The binding after its Role: binding a Role the API server cannot find yet is
            // refused (it checks that the operator holds what the Role grants).
            async {
                self.apply_each(&roles).await?;
                self.apply_each(&role_bindings).await
            },
        )?;
        config_map_names.extend(device_places);
        let (live_stateful_sets, live_deployments, cron_job_names, job_names) = futures::try_join!(
            self.apply_live(&stateful_sets),
            self.apply_live(&deployments),
            self.apply_each(&cron_jobs),
            self.create_absent(&jobs),
        )?;
        let live_autoscalers = self.apply_live(&autoscalers).await?;

        // Autoscalers first, so a Deployment is never left with an HPA pointing at nothing.
        self.delete_unwanted::<HorizontalPodAutoscaler>(&names(&live_autoscalers))
            .await?;
        self.delete_unwanted::<Deployment>(&names(&live_deployments))
            .await?;
        self.delete_unwanted::<StatefulSet>(&names(&live_stateful_sets))
            .await?;
        // The CronJob's runs are its own (not the monitor's): they go with it.
        self.delete_unwanted::<CronJob>(&cron_job_names).await?;
        self.delete_unwanted::<Job>(&job_names).await?;
        self.delete_unwanted::<NetworkPolicy>(&policy_names).await?;
        self.delete_unwanted::<Service>(&names(&live_services))
            .await?;
        self.delete_unwanted::<ConfigMap>(&config_map_names).await?;
        // PersistentVolumeClaims and the credentials Secret are never deleted here: they hold
        // data, and go with the IotMonitor only through their owner reference. The devices
        // Secret, the ServiceAccount, Role and RoleBinding are wanted as long as the monitor
        // exists, and go with it the same way.

        let jobs = self.jobs().await?;
        Ok(Applied {
            jobs,
            stateful_sets: live_stateful_sets,
            deployments: live_deployments,
            services: live_services,
            autoscalers: live_autoscalers,
            writes: self.writes.into_inner(),
            deleted: self.deleted,
            influxdb_trouble: None,
            runs: Default::default(),
            device_keys,
        })
    }

    fn count_write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    async fn apply_each<K>(&self, objects: &[K]) -> Result<BTreeSet<String>, ApplyError>
    where
        K: Cached,
    {
        Ok(names(&self.apply_live(objects).await?))
    }

    async fn apply_live<K>(&self, objects: &[K]) -> Result<Vec<K>, ApplyError>
    where
        K: Cached,
    {
        // Objects of one kind depend on nothing of each other: applied at once, so a first
        // reconcile waits for the API server once per kind, not once per object (a Service's
        // ClusterIP allocation takes long on a busy server).
        let applied = futures::future::try_join_all(objects.iter().map(|o| self.apply(o))).await?;
        let mut live = Vec::with_capacity(applied.len());
        for (object, wrote) in applied {
            if wrote {
                self.count_write();
            }
            live.push(object);
        }
        Ok(live)
    }

    /// The live object, and whether it had to be written: the read and the write that
    /// `known_state::decide` asks for.
    async fn apply<K: Cached>(&self, desired: &K) -> Result<(K, bool), ApplyError> {
        let kind = <K as k8s_openapi::Resource>::KIND;
        let name = desired.meta().name.clone().unwrap_or_default();
        let serialize_error = |e| ApplyError::Serialize(kind, e);
        let (desired, wanted) = Wanted::mark(desired).map_err(serialize_error)?;
        let key = MemoKey::child::<K>(self.namespace, &name);

        let mut seen = self.cache.seen::<K>(self.namespace, &name);
        let mut decision =
            decide(&wanted, self.memo.get(key).as_ref(), &seen).map_err(serialize_error)?;
        if let Decision::ReadFirst(reason) = decision {
            tracing::debug!(kind, name, ?reason, "reading");
            seen = Seen::Read(self.read::<K>(&name).await?);
            decision =
                decide(&wanted, self.memo.get(key).as_ref(), &seen).map_err(serialize_error)?;
        }
        let reason = match (decision, seen.into_object()) {
            (Decision::Skip(reason), Some(live)) => {
                if reason.is_news_to_memo() {
                    self.memo.remember(key, wanted.hash(), live.meta());
                }
                return Ok((live, false));
            }
            (Decision::Write(reason), _) => reason.as_str(),
            // Not after a read (`decide` promises it, its table checks it); a write is safe.
            (Decision::ReadFirst(_) | Decision::Skip(_), _) => "applying",
        };
        tracing::info!(kind, name, "{reason}");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = self
            .api::<K>()
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .map_err(|source| ApplyError::Apply { kind, name, source })?;
        self.metrics.record_write(kind, "apply");
        self.memo.remember(key, wanted.hash(), applied.meta());
        Ok((applied, true))
    }

    /// The child of kind `K` named `name`, from the API server: `None` if there is none.
    async fn read<K: Cached>(&self, name: &str) -> Result<Option<K>, ApplyError> {
        let kind = <K as k8s_openapi::Resource>::KIND;
        self.api::<K>()
            .get_opt(name)
            .await
            .map_err(|source| ApplyError::Read {
                what: format!("{kind} {name}"),
                source,
            })
    }

    /// Deletes our children of kind `K` that are not in `wanted`: selected by our labels and
    /// checked against the owner reference, so nothing of anyone else's is ever touched.
    async fn delete_unwanted<K>(&mut self, wanted: &BTreeSet<String>) -> Result<(), ApplyError>
    where
        K: Cached,
    {
        let kind = <K as k8s_openapi::Resource>::KIND;
        let api = self.api::<K>();
        for child in self.children::<K>().await? {
            let name = child.name.clone().unwrap_or_default();
            let ours = child
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == self.owner_uid && o.controller == Some(true));
            if !ours || wanted.contains(&name) || child.deletion_timestamp.is_some() {
                continue;
            }
            tracing::info!(kind, name, "deleting a child the spec no longer wants");
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(source) => return Err(ApplyError::Delete { kind, name, source }),
            }
            self.metrics.record_write(kind, "delete");
            self.count_write();
            self.deleted.push(format!("{kind}/{name}"));
        }
        Ok(())
    }
    /// Our children of kind `K` (by label): from the cache, else listed.
    async fn children<K: Cached>(&self) -> Result<Vec<ObjectMeta>, ApplyError> {
        if let Some(cached) = self.cache.list::<K>(self.namespace, self.instance) {
            return Ok(cached.into_iter().map(|c| c.meta().clone()).collect());
        }
        let kind = <K as k8s_openapi::Resource>::KIND;
        let params = ListParams::default().labels(&children_selector(self.instance));
        let listed = self
            .api::<K>()
            .list_metadata(&params)
            .await
            .map_err(|source| ApplyError::Read {
                what: format!("{kind} list"),
                source,
            })?;
        Ok(listed.items.into_iter().map(|c| c.metadata).collect())
    }
}

fn names<K: Resource>(objects: &[K]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| o.meta().name.clone())
        .collect()
}
