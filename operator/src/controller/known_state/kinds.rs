//! What each child kind keeps in the cache, and which of its changes wake the owner.
//!
//! Without the fingerprints, other controllers' status writes (the HPA controller's every few
//! seconds, each Deployment's rollout progress) each cost a full reconcile of the owner.

use std::collections::BTreeMap;
use std::hash::Hash;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::Store;

use super::cache::{Cached, ChildCache};
use super::packed::Packed;
use crate::controller::hash::hash_of;

/// What the spec side of a fingerprint covers: spec changes (generation), our labels and
/// applied-hash annotation, and deletion in progress.
fn meta_fingerprint<K: Resource>(object: &K) -> impl Hash + '_ {
    let meta = object.meta();
    (
        meta.generation,
        &meta.labels,
        &meta.annotations,
        meta.deletion_timestamp.is_some(),
    )
}

macro_rules! cached {
    ($field:ident) => {
        fn store(cache: &ChildCache) -> Option<&Store<Packed<Self>>> {
            cache.$field.as_ref()
        }
        fn set_store(cache: &mut ChildCache, store: Store<Packed<Self>>) {
            cache.$field = Some(store);
        }
    };
}

/// What a Deployment or StatefulSet keeps in the cache: not its pod template (most of the
/// object), nor its status conditions (their times change on every sync).
fn prune_rollout<C>(
    meta: &mut ObjectMeta,
    template: &mut PodTemplateSpec,
    conditions: Option<&mut Option<Vec<C>>>,
) {
    meta.managed_fields = None;
    *template = PodTemplateSpec::default();
    if let Some(conditions) = conditions {
        *conditions = None;
    }
}

/// Spec changes and the rollout figures (replicas, updated, ready, revisions) of a pruned
/// workload's status, which no longer holds the conditions whose times change on every sync.
fn rollout_fingerprint<K: Resource, S: serde::Serialize>(object: &K, status: &Option<S>) -> u64 {
    hash_of(&(meta_fingerprint(object), serde_json::to_string(status).ok()))
}

impl Cached for Deployment {
    cached!(deployments);
    const GENERATION_TRACKS_SPEC: bool = true;

    fn prune(&mut self) {
        let conditions = self.status.as_mut().map(|s| &mut s.conditions);
        prune_rollout(&mut self.metadata, &mut self.spec.template, conditions);
    }

    fn fingerprint(&self) -> u64 {
        rollout_fingerprint(self, &self.status)
    }
}

impl Cached for StatefulSet {
    cached!(stateful_sets);
    const GENERATION_TRACKS_SPEC: bool = true;

    fn prune(&mut self) {
        let conditions = self.status.as_mut().map(|s| &mut s.conditions);
        prune_rollout(&mut self.metadata, &mut self.spec.template, conditions);
        self.spec.volume_claim_templates = None;
    }

    fn fingerprint(&self) -> u64 {
        rollout_fingerprint(self, &self.status)
    }
}

impl Cached for HorizontalPodAutoscaler {
    cached!(autoscalers);
    const CACHE_KEEPS_APPLIED: bool = true;

    /// The conditions stay: the IotMonitor's Autoscaling condition is made from them, also
    /// from a cached copy. The current metrics, rewritten on every sync, go.
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        if let Some(status) = &mut self.status {
            status.current_metrics = None;
        }
    }

    /// The spec, and the conditions' type, status and reason: a change of those (metrics
    /// becoming unavailable, scaling limited) wakes the owner; a metrics update does not.
    fn fingerprint(&self) -> u64 {
        let spec = serde_json::to_string(&self.spec).ok();
        hash_of(&(meta_fingerprint(self), spec, conditions_key(self)))
    }
}

/// A fingerprint of an HPA's conditions (type, status, reason), without their messages and
/// times, which change with every metrics update.
fn conditions_key(hpa: &HorizontalPodAutoscaler) -> u64 {
    let conditions: Vec<_> = hpa
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .map(|c| (&c.type_, &c.status, &c.reason))
        .collect();
    hash_of(&conditions)
}

impl Cached for ConfigMap {
    cached!(config_maps);

    /// The applied-hash annotation stands for the content; drift is checked on a fresh read.
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        self.data = None;
        self.binary_data = None;
    }
}

impl Cached for Secret {
    cached!(secrets);

    /// Only the names of the keys are needed (to add missing ones, and to see a device's key
    /// deleted or left over): no credential or device key is kept.
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        self.string_data = None;
        if let Some(data) = &mut self.data {
            let keys: BTreeMap<String, ByteString> = std::mem::take(data)
                .into_keys()
                .map(|k| (k, ByteString(Vec::new())))
                .collect();
            *data = keys;
        }
    }
}

impl Cached for CronJob {
    cached!(cron_jobs);
    const GENERATION_TRACKS_SPEC: bool = true;

    /// Not its Job template, nor its status (the last schedule time changes with every run;
    /// the runs are watched as Jobs).
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        self.spec.job_template = Default::default();
        self.status = None;
    }

    fn fingerprint(&self) -> u64 {
        hash_of(&meta_fingerprint(self))
    }
}

impl Cached for Job {
    cached!(jobs);
    const GENERATION_TRACKS_SPEC: bool = true;

    /// Not its pod template; of its status what the backup and restore status are made from.
    fn prune(&mut self) {
        self.metadata.managed_fields = None;
        if let Some(spec) = &mut self.spec {
            spec.template = PodTemplateSpec::default();
        }
        if let Some(status) = &mut self.status {
            status.uncounted_terminated_pods = None;
            status.ready = None;
            status.terminating = None;
        }
    }

    /// A run that starts, ends or fails again wakes its monitor; not a pod's readiness.
    fn fingerprint(&self) -> u64 {
        let status = self.status.as_ref();
        let conditions: Vec<_> = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (&c.type_, &c.status))
            .collect();
        let counts = status.map(|s| (s.active, s.succeeded, s.failed));
        hash_of(&(meta_fingerprint(self), conditions, counts))
    }
}

/// Kinds without status churn, whose cached copy (all but the managed fields) keeps everything
/// the operator applies: compared right in the cache, every change wakes the owner.
macro_rules! cached_whole {
    ($($kind:ty => $field:ident),+ $(,)?) => {
        $(impl Cached for $kind {
            cached!($field);
            const CACHE_KEEPS_APPLIED: bool = true;
        })+
    };
}

cached_whole! {
    Service => services,
    NetworkPolicy => network_policies,
    PersistentVolumeClaim => claims,
    ServiceAccount => service_accounts,
    Role => roles,
    RoleBinding => role_bindings,
}

#[cfg(test)]
mod tests;
