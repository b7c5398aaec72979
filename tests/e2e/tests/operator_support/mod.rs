//! Shared by the `operator_*` tests: the CRD installed once per cluster, an operator running
//! in-process and scoped to the test's namespace (so tests never see each other's monitors),
//! and waits on IotMonitor conditions.

#![allow(dead_code)] // each test file uses a different part

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use iot_operator::controller::{self, Context};
use iot_operator::crd::IotMonitor;
use iot_operator::metrics::Metrics;
use iot_testkit::cluster::{Cluster, default_timeout, repo_dir, wait_condition, wait_for};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::events::Reporter;
use kube::runtime::wait::conditions;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const CRD_NAME: &str = "iotmonitors.iot.operator.dev";

/// Applies `crds/iotmonitor.yaml` (idempotent, safe from parallel tests) and waits until the API
/// server serves the kind.
pub async fn install_crd(cluster: &Cluster) -> Result<()> {
    let yaml = std::fs::read_to_string(repo_dir().join("crds/iotmonitor.yaml"))?;
    cluster.apply_yaml(None, &yaml).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    wait_condition(
        crds,
        CRD_NAME,
        conditions::is_crd_established(),
        default_timeout(),
    )
    .await?;
    Ok(())
}

/// An operator running in this test process, watching one namespace.
pub struct Operator {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    registry: Registry,
}

impl Operator {
    pub fn start(client: kube::Client, namespace: &str) -> Self {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let reporter = Reporter {
            controller: "iot-operator-e2e".into(),
            instance: None,
        };
        let ctx = Arc::new(Context::new(client, metrics.clone(), reporter));
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(controller::run(ctx, Some(namespace.to_owned()), shutdown));
        Self {
            stop,
            task,
            registry,
        }
    }

    /// Graceful shutdown: in-flight reconciles finish.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the operator did not stop within 30 s")??;
        Ok(())
    }

    /// Writes to the API server so far (applies, creates, deletes, status patches, Events),
    /// from the operator's own `iot_operator_api_writes_total` metric.
    pub fn writes(&self) -> u64 {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return u64::MAX;
        }
        text.lines()
            .filter(|l| l.starts_with("iot_operator_api_writes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// The status of condition `type_` ("True"/"False"), if set.
pub fn condition(monitor: &IotMonitor, type_: &str) -> Option<(String, String, String)> {
    monitor
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the monitor reports `Ready=True` for its current generation.
pub async fn wait_ready(api: &Api<IotMonitor>, name: &str) -> Result<IotMonitor> {
    let monitor = wait_for(
        &format!("IotMonitor {name} to be Ready"),
        default_timeout(),
        || async {
            let m = api.get(name).await.map_err(|e| e.to_string())?;
            let generation = m.metadata.generation;
            let observed = m.status.as_ref().and_then(|s| s.observed_generation);
            match condition(&m, "Ready") {
                Some((status, _, _)) if status == "True" && observed == generation => Ok(m),
                other => Err(format!("Ready={other:?}, observedGeneration={observed:?}")),
            }
        },
    )
    .await?;
    Ok(monitor)
}

/// Applies an IotMonitor given as YAML (`metadata.name` inside) into `namespace`.
pub async fn apply_monitor(cluster: &Cluster, namespace: &str, yaml: &str) -> Result<()> {
    cluster.apply_yaml(Some(namespace), yaml).await?;
    Ok(())
}

/// The value of environment variable `name` in the first container of a Deployment.
pub fn first_container_env(
    d: &k8s_openapi::api::apps::v1::Deployment,
    name: &str,
) -> Option<String> {
    d.spec
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}
