//! What the cluster looks like right now, for the timeline: the monitor's pods and HPAs from
//! watches (kube-runtime reflectors, so a slow API server never delays a row), and pod CPU and
//! memory from the metrics API (metrics.k8s.io), polled every second. The functions that turn
//! objects into samples are pure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use super::quantity;
use super::timeline::{HpaReplicas, PodSample};

const NAME_LABEL: &str = "app.kubernetes.io/name";

/// CPU (millicores) and memory (MiB) of one pod, summed over its containers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_m: f64,
    pub memory_mib: f64,
}

/// The selector of everything of one IotMonitor (its children and our load Job).
pub fn monitor_selector(instance: &str) -> String {
    format!("app.kubernetes.io/instance={instance},app.kubernetes.io/part-of=iot-monitor")
}

/// A pod's state as the reference's monitor reported an instance's: Pending, Running (not yet
/// ready), Ready, Terminating, Succeeded or Failed.
pub fn pod_state(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if phase == "Running" && ready {
        "Ready".into()
    } else {
        phase
    }
}

/// Sum of the containers' CPU requests in millicores; `None` when no container has one.
pub fn cpu_request_m(pod: &Pod) -> Option<f64> {
    let spec = pod.spec.as_ref()?;
    let requests: Vec<f64> = spec
        .containers
        .iter()
        .filter_map(|c| {
            let q = c.resources.as_ref()?.requests.as_ref()?.get("cpu")?;
            quantity::millicores(&q.0)
        })
        .collect();
    (!requests.is_empty()).then(|| requests.iter().sum())
}

pub fn pod_sample(pod: &Pod, usage: Option<&Usage>) -> PodSample {
    let labels = pod.metadata.labels.as_ref();
    PodSample {
        name: pod.metadata.name.clone().unwrap_or_default(),
        component: labels
            .and_then(|l| l.get(NAME_LABEL).cloned())
            .unwrap_or_default(),
        state: pod_state(pod),
        cpu_m: usage.map(|u| u.cpu_m),
        cpu_request_m: cpu_request_m(pod),
        memory_mib: usage.map(|u| u.memory_mib),
    }
}

/// Replicas of the HPA whose `app.kubernetes.io/name` is `component`. An HPA reports a
/// desired count of 0 until it has computed one (minReplicas is at least 1): that is `None`.
pub fn hpa_replicas<'a>(
    hpas: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
    component: &str,
) -> HpaReplicas {
    hpas.into_iter()
        .find(|h| {
            h.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NAME_LABEL))
                .is_some_and(|n| n == component)
        })
        .map(|h| {
            let status = h.status.as_ref();
            HpaReplicas {
                desired: status.map(|s| s.desired_replicas).filter(|d| *d > 0),
                current: status.and_then(|s| s.current_replicas),
            }
        })
        .unwrap_or_default()
}

/// PodMetrics objects (as JSON) → pod name → usage.
pub fn usage_of(items: &[serde_json::Value]) -> BTreeMap<String, Usage> {
    items
        .iter()
        .filter_map(|pod| {
            let name = pod["metadata"]["name"].as_str()?.to_owned();
            let containers = pod["containers"].as_array()?;
            let sum = |key: &str, parse: fn(&str) -> Option<f64>| {
                containers
                    .iter()
                    .map(|c| c["usage"][key].as_str().and_then(parse))
                    .sum::<Option<f64>>()
            };
            let usage = Usage {
                cpu_m: sum("cpu", quantity::millicores)?,
                memory_mib: sum("memory", quantity::mebibytes)?,
            };
            Some((name, usage))
        })
        .collect()
}

/// The watches and the metrics poll of one monitor, running in the background.
pub struct Sampler {
    pods: Store<Pod>,
    hpas: Store<HorizontalPodAutoscaler>,
    usage: Arc<Mutex<BTreeMap<String, Usage>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// What [`Sampler::sample`] returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterSample {
    pub grafana: HpaReplicas,
    pub coap_server: HpaReplicas,
    pub pods: Vec<PodSample>,
}

impl Sampler {
    pub async fn start(client: kube::Client, namespace: &str, instance: &str) -> Self {
        let config = watcher::Config::default().labels(&monitor_selector(instance));
        let (pods, pods_writer) = reflector::store();
        let (hpas, hpas_writer) = reflector::store();
        let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), namespace);
        let mut tasks = vec![
            tokio::spawn(
                watcher(pod_api, config.clone())
                    .default_backoff()
                    .reflect(pods_writer)
                    .for_each(|_| std::future::ready(())),
            ),
            tokio::spawn(
                watcher(hpa_api, config)
                    .default_backoff()
                    .reflect(hpas_writer)
                    .for_each(|_| std::future::ready(())),
            ),
        ];
        let usage = Arc::new(Mutex::new(BTreeMap::new()));
        tasks.push(tokio::spawn(poll_metrics(
            client,
            namespace.to_owned(),
            monitor_selector(instance),
            usage.clone(),
        )));
        // The first rows should already show the pods; a watch that cannot start shows up
        // as empty rows and a warning rather than as a hang.
        let ready = async {
            let _ = tokio::join!(pods.wait_until_ready(), hpas.wait_until_ready());
        };
        if tokio::time::timeout(Duration::from_secs(15), ready)
            .await
            .is_err()
        {
            tracing::warn!("the pod and HPA watches are not ready after 15 s; recording anyway");
        }
        Self {
            pods,
            hpas,
            usage,
            tasks,
        }
    }

    pub fn sample(&self) -> ClusterSample {
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let hpas = self.hpas.state();
        ClusterSample {
            grafana: hpa_replicas(hpas.iter().map(AsRef::as_ref), "grafana"),
            coap_server: hpa_replicas(hpas.iter().map(AsRef::as_ref), "coap-server"),
            pods: self
                .pods
                .state()
                .iter()
                .map(|p| pod_sample(p, p.metadata.name.as_ref().and_then(|n| usage.get(n))))
                .collect(),
        }
    }

    /// The HPA of `component`, as last seen (for its maxReplicas).
    pub fn hpa(&self, component: &str) -> Option<Arc<HorizontalPodAutoscaler>> {
        self.hpas.state().into_iter().find(|h| {
            h.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NAME_LABEL))
                .is_some_and(|n| n == component)
        })
    }

    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn poll_metrics(
    client: kube::Client,
    namespace: String,
    selector: String,
    usage: Arc<Mutex<BTreeMap<String, Usage>>>,
) {
    let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "pods");
    let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &resource);
    let lp = ListParams::default().labels(&selector);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tick.tick().await;
        let listed = tokio::time::timeout(Duration::from_secs(5), api.list(&lp)).await;
        match listed {
            Ok(Ok(list)) => {
                let items: Vec<serde_json::Value> = list
                    .items
                    .into_iter()
                    .filter_map(|o| serde_json::to_value(o).ok())
                    .collect();
                *usage.lock().unwrap_or_else(|p| p.into_inner()) = usage_of(&items);
            }
            // Transient (the aggregated API briefly away, metrics-server restarting): the
            // last values stand. Said once, so a cluster without metrics-server is noticed.
            Ok(Err(e)) if !warned => {
                tracing::warn!(error = %e, "cannot read pod metrics (is metrics-server installed?); CPU and memory stay empty");
                warned = true;
            }
            Ok(Err(_)) => {}
            Err(_) => tracing::debug!("the pod metrics list took over 5 s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn pod_states_follow_phase_readiness_and_deletion() {
        let ready = pod(
            "metadata: {name: a}\nstatus: {phase: Running, conditions: [{type: Ready, status: 'True'}]}",
        );
        let starting = pod(
            "metadata: {name: a}\nstatus: {phase: Running, conditions: [{type: Ready, status: 'False'}]}",
        );
        let pending = pod("metadata: {name: a}\nstatus: {phase: Pending}");
        let going = pod(
            "metadata: {name: a, deletionTimestamp: '2026-01-01T00:00:00Z'}\nstatus: {phase: Running}",
        );
        assert_eq!(pod_state(&ready), "Ready");
        assert_eq!(pod_state(&starting), "Running");
        assert_eq!(pod_state(&pending), "Pending");
        assert_eq!(pod_state(&going), "Terminating");
    }

    #[test]
    fn a_pod_sample_carries_component_request_and_usage() {
        let p = pod(
            "metadata: {name: lab-coap-server-x, labels: {app.kubernetes.io/name: coap-server}}\n\
             spec: {containers: [{name: a, resources: {requests: {cpu: 50m}}}, {name: b}]}\n\
             status: {phase: Pending}",
        );
        let s = pod_sample(
            &p,
            Some(&Usage {
                cpu_m: 30.0,
                memory_mib: 9.0,
            }),
        );
        assert_eq!(s.component, "coap-server");
        assert_eq!(s.cpu_request_m, Some(50.0));
        assert_eq!(s.cpu_pct(), Some(60.0));
        assert_eq!(pod_sample(&p, None).cpu_m, None);
    }

    #[test]
    fn hpa_replicas_are_found_by_component() {
        let hpa: HorizontalPodAutoscaler = serde_yaml::from_str(
            "metadata: {name: lab-coap-server, labels: {app.kubernetes.io/name: coap-server}}\n\
             spec: {scaleTargetRef: {kind: Deployment, name: x}, maxReplicas: 5}\n\
             status: {currentReplicas: 2, desiredReplicas: 3}",
        )
        .unwrap();
        let r = hpa_replicas([&hpa], "coap-server");
        assert_eq!((r.desired, r.current), (Some(3), Some(2)));
        assert_eq!(hpa_replicas([&hpa], "grafana"), HpaReplicas::default());
        let mut fresh = hpa.clone();
        fresh.status.as_mut().unwrap().desired_replicas = 0;
        assert_eq!(hpa_replicas([&fresh], "coap-server").desired, None);
    }

    #[test]
    fn pod_metrics_are_summed_over_containers() {
        let items: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"metadata": {"name": "p"}, "containers": [
                   {"usage": {"cpu": "299994362n", "memory": "8Mi"}},
                   {"usage": {"cpu": "100m", "memory": "8192Ki"}}]},
                {"metadata": {"name": "broken"}, "containers": [{"usage": {"cpu": "x"}}]}]"#,
        )
        .unwrap();
        let u = usage_of(&items);
        assert_eq!(u.len(), 1);
        assert!((u["p"].cpu_m - 399.994362).abs() < 1e-6);
        assert!((u["p"].memory_mib - 16.0).abs() < 1e-9);
    }
}
