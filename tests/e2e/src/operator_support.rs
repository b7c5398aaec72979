//! Shared by the `operator_*` tests: the CRD installed once per cluster, an operator running
//! in-process and scoped to the test's namespace (so tests never see each other's monitors),
//! and waits on IotMonitor conditions.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use iot_operator::controller::{self, Context, WatchScope};
use iot_operator::crd::IotMonitor;
use iot_operator::metrics::Metrics;
use iot_testkit::cluster::{
    Cluster, TestNamespace, default_timeout, repo_dir, wait_condition, wait_for,
};
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
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

/// The smallest IotMonitor, `lab`: `spec: {}` is a whole stack.
pub const MINIMAL: &str =
    "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {name: lab}\nspec: {}\n";

/// The cluster, with the CRD installed, and a fresh namespace named after the test.
pub async fn setup(test: &str) -> Result<(Cluster, TestNamespace)> {
    setup_with_labels(test, &[]).await
}

/// [`setup`] with labels on the namespace (Pod Security levels, for example).
pub async fn setup_with_labels(
    test: &str,
    labels: &[(&str, &str)],
) -> Result<(Cluster, TestNamespace)> {
    let cluster = Cluster::connect().await?;
    install_crd(&cluster).await?;
    let ns = cluster.namespace_with_labels(test, labels).await?;
    Ok((cluster, ns))
}

/// The controller's context as `main` builds it, with its own metrics registry.
pub fn context(
    client: kube::Client,
    instance: Option<&str>,
) -> (Arc<Context>, Arc<Metrics>, Registry) {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let reporter = Reporter {
        controller: "iot-operator-e2e".into(),
        instance: instance.map(str::to_owned),
    };
    // The Prometheus operator's CRDs are cluster-wide: only the test of that path turns
    // discovery on (`Operator::start_with_prometheus`), so tests running beside it never see
    // them appear. The storage forecast reads InfluxDB over HTTP, which the kwok nodes' pods do
    // not answer: only the test of the forecast turns it on (`Operator::start_with_storage`).
    let ctx = Arc::new(
        Context::new(client, metrics.clone(), reporter)
            .with_prometheus_discovery(None)
            .with_storage_every(None),
    );
    (ctx, metrics, registry)
}

/// An operator running in this test process, watching one namespace.
pub struct Operator {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    registry: Registry,
}

impl Operator {
    pub fn start(client: kube::Client, namespace: &str) -> Self {
        let (ctx, _, registry) = context(client, None);
        Self::run(ctx, registry, namespace)
    }

    /// [`Operator::start`] asking discovery every `every` whether the Prometheus operator's
    /// kinds exist.
    pub fn start_with_prometheus(client: kube::Client, namespace: &str, every: Duration) -> Self {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let reporter = Reporter {
            controller: "iot-operator-e2e".into(),
            instance: None,
        };
        let ctx = Context::new(client, metrics, reporter)
            .with_prometheus_discovery(Some(every))
            .with_storage_every(None);
        Self::run(Arc::new(ctx), registry, namespace)
    }

    /// [`Operator::start`] measuring each monitor's storage every `every`.
    pub fn start_with_storage(client: kube::Client, namespace: &str, every: Duration) -> Self {
        let mut registry = Registry::default();
        let metrics = Arc::new(Metrics::register(&mut registry));
        let reporter = Reporter {
            controller: "iot-operator-e2e".into(),
            instance: None,
        };
        let ctx = Context::new(client, metrics, reporter)
            .with_prometheus_discovery(None)
            .with_storage_every(Some(every));
        Self::run(Arc::new(ctx), registry, namespace)
    }

    fn run(ctx: Arc<Context>, registry: Registry, namespace: &str) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(controller::run(
            ctx,
            WatchScope::Namespace(namespace.to_owned()),
            shutdown,
        ));
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
        self.writes_matching(|_| true)
    }

    /// Writes so far other than to IotMonitor statuses: to children, Secrets and Events.
    pub fn writes_but_status(&self) -> u64 {
        self.writes_matching(|labels| !labels.contains("kind=\"IotMonitor\""))
    }

    /// Reconciles so far, successful or not (`iot_operator_reconciles_total`).
    pub fn reconciles(&self) -> u64 {
        self.sum_of("iot_operator_reconciles_total{", |_| true)
    }

    fn writes_matching(&self, keep: impl Fn(&str) -> bool) -> u64 {
        self.sum_of("iot_operator_api_writes_total{", keep)
    }

    fn sum_of(&self, prefix: &str, keep: impl Fn(&str) -> bool) -> u64 {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return u64::MAX;
        }
        text.lines()
            .filter(|l| l.starts_with(prefix) && keep(l))
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

/// A test's namespace with an operator running for it and an IotMonitor applied there.
pub struct Stack {
    pub cluster: Cluster,
    pub ns: TestNamespace,
    pub operator: Operator,
    pub monitors: Api<IotMonitor>,
}

impl Stack {
    /// Starts the operator, then applies `monitor_yaml`.
    pub async fn start(test: &str, monitor_yaml: &str) -> Result<Self> {
        let (cluster, ns) = setup(test).await?;
        let operator = Operator::start(cluster.client(), ns.name());
        cluster.apply_yaml(Some(ns.name()), monitor_yaml).await?;
        let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
        Ok(Self {
            cluster,
            ns,
            operator,
            monitors,
        })
    }

    /// [`Stack::start`] with [`MINIMAL`], once `lab` is Ready.
    pub async fn ready(test: &str) -> Result<(Self, IotMonitor)> {
        let stack = Self::start(test, MINIMAL).await?;
        let monitor = wait_ready(&stack.monitors, "lab").await?;
        Ok((stack, monitor))
    }

    /// An API of kind `K` in the stack's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.cluster.client(), self.ns.name())
    }

    /// Stops the operator (the namespace goes when the stack drops).
    pub async fn stop(self) -> Result<()> {
        self.operator.stop().await
    }
}

/// Waits until the first container of Deployment `name` has `var` set to `value`.
pub async fn wait_env(
    deployments: &Api<Deployment>,
    name: &str,
    var: &str,
    value: &str,
) -> Result<()> {
    wait_for(
        &format!("{name}: {var}={value}"),
        default_timeout(),
        || async {
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            match first_container_env(&d, var) {
                Some(v) if v == value => Ok(()),
                other => Err(format!("{var}={other:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

/// Waits until object `name` of kind `K` is gone.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    wait_condition(
        api.clone(),
        name,
        conditions::is_deleted(""),
        default_timeout(),
    )
    .await?;
    Ok(())
}

/// The value of environment variable `name` in the first container of a Deployment.
pub fn first_container_env(d: &Deployment, name: &str) -> Option<String> {
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

/// `Kind/name` → resourceVersion of every child the operator writes.
pub async fn versions(cluster: &Cluster, ns: &str) -> Result<BTreeMap<String, String>> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=iot-operator");
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty) => {
            for o in Api::<$kind>::namespaced(cluster.client(), ns)
                .list(&lp)
                .await?
            {
                let key = format!(
                    "{}/{}",
                    stringify!($kind),
                    o.metadata.name.unwrap_or_default()
                );
                out.insert(key, o.metadata.resource_version.unwrap_or_default());
            }
        };
    }
    collect!(Deployment);
    collect!(StatefulSet);
    collect!(Service);
    collect!(ConfigMap);
    collect!(Secret);
    collect!(PersistentVolumeClaim);
    collect!(HorizontalPodAutoscaler);
    collect!(NetworkPolicy);
    collect!(ServiceAccount);
    collect!(Role);
    collect!(RoleBinding);
    Ok(out)
}
