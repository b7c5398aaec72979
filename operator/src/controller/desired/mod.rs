//! [`ValidatedMonitor`](super::validate::ValidatedMonitor) → Kubernetes objects (pure). One
//! module per component; [`DesiredObjects`] gathers everything one IotMonitor should have.

pub(crate) mod access;
pub mod alerts;
pub(crate) mod aqi_ingestor;
pub(crate) mod autoscaling;
pub mod backup;
pub(crate) mod coap_server;
pub(crate) mod devices;
pub(crate) mod grafana;
pub mod influxdb;
pub mod influxdb_plan;
pub(crate) mod labels;
pub(crate) mod network;
pub mod pod;
pub mod prometheus;
pub(crate) mod secrets;
pub(crate) mod simulator;
pub(crate) mod template;
mod workload;

#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

use crate::controller::validate::ValidatedMonitor;

/// Every object one IotMonitor should have, grouped by kind. The apply step destructures this
/// without `..`, so a new field is a compile error until it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObjects {
    /// Created once, never overwritten (see [`secrets`]).
    pub credentials: secrets::Credentials,
    /// The device registry: its Secret of keys is written as [`devices`] says, never applied.
    pub devices: devices::DeviceRegistry,
    pub config_maps: Vec<ConfigMap>,
    pub persistent_volume_claims: Vec<PersistentVolumeClaim>,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub autoscalers: Vec<HorizontalPodAutoscaler>,
    pub network_policies: Vec<NetworkPolicy>,
    pub service_accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    /// The backup CronJob.
    pub cron_jobs: Vec<CronJob>,
    /// The restore Job: created once, never patched (its template cannot change).
    pub jobs: Vec<Job>,
}

pub fn build(model: &ValidatedMonitor) -> DesiredObjects {
    let influx = influxdb::build(model);
    let grafana = grafana::build(model);
    let coap = coap_server::build(model);

    let mut deployments = vec![grafana.deployment, coap.deployment];
    deployments.extend(simulator::build(model));
    deployments.extend(aqi_ingestor::build(model));

    let autoscalers = autoscaling::build(model)
        .map(|a| vec![a.grafana, a.coap_server])
        .unwrap_or_default();

    let mut config_maps: Vec<ConfigMap> = influx.setup.into_iter().collect();
    config_maps.extend([grafana.provisioning, grafana.dashboards]);
    config_maps.extend(grafana.alerting);

    let mut services: Vec<Service> = influx.service.into_iter().chain(influx.headless).collect();
    services.extend([grafana.service, coap.service]);
    // The Prometheus path's headless Service; its ServiceMonitor and PrometheusRule are
    // dynamic objects, applied apart (`apply::monitoring`).
    services.extend(prometheus::build(model).map(|m| m.metrics_service));

    let backup = backup::build(model);
    let mut persistent_volume_claims: Vec<PersistentVolumeClaim> =
        influx.data.into_iter().collect();
    persistent_volume_claims.extend(backup.volume);

    let access = access::build(model);
    DesiredObjects {
        credentials: secrets::build(model),
        devices: devices::build(model),
        config_maps,
        persistent_volume_claims,
        services,
        stateful_sets: influx.stateful_set.into_iter().collect(),
        deployments,
        autoscalers,
        network_policies: network::policies::build(model),
        service_accounts: vec![access.service_account],
        roles: vec![access.role],
        role_bindings: vec![access.role_binding],
        cron_jobs: backup.cron_job.into_iter().collect(),
        jobs: backup.restore_job.into_iter().collect(),
    }
}
