#![allow(clippy::unwrap_used)]
//! HorizontalPodAutoscalers really scale on the local control plane: kwok's emulated kubelets report the
//! CPU that a pod's `kwok.x-k8s.io/usage-cpu` annotation asks for (`tests/cluster/kwok-usage.yaml`),
//! metrics-server serves it as `metrics.k8s.io`, and the controller manager's HPA controller acts on it
//! with the autoscaling/v2 behavior the GUIDE maps the seed's auto-scaling group onto (target 60 %,
//! 1 pod per period, scale-down tolerance 0.3), with short periods so the test takes minutes, not hours.
//! Needs `make cluster-up` (see `iot_testkit::cluster`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use iot_testkit::cluster::{
    Cluster, ClusterError, KWOK_USAGE_CPU, default_timeout, millicores, run, wait_for,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::core::GroupVersionKind;

const APP: &str = "web";
/// The pod annotation kwok's usage expression reads (CPU used by each container).
const CPU_REQUEST_MILLIS: f64 = 100.0;
const MAX_REPLICAS: i32 = 5;
/// The HPA's Pods policies allow one pod per this many seconds, both ways.
const POLICY_PERIOD_SECS: u64 = 10;

/// A Deployment whose pods request 100m CPU and, through the template annotation, use 300m (300 %) each,
/// new pods included; and its HPA. `replicas` is left out, as the GUIDE asks for anything an HPA scales.
fn manifests() -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {APP}}}
spec:
  selector: {{matchLabels: {{app: {APP}}}}}
  template:
    metadata:
      labels: {{app: {APP}}}
      annotations: {{"{KWOK_USAGE_CPU}": 300m}}
    spec:
      containers:
      - name: {APP}
        image: example.invalid/web:1
        resources: {{requests: {{cpu: {CPU_REQUEST_MILLIS}m}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: {APP}}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {APP}}}
  minReplicas: 1
  maxReplicas: {MAX_REPLICAS}
  metrics:
  - type: Resource
    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 60}}}}
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      tolerance: "0"
      policies: [{{type: Pods, value: 1, periodSeconds: {POLICY_PERIOD_SECS}}}]
    scaleDown:
      stabilizationWindowSeconds: 5
      tolerance: "0.3"
      policies: [{{type: Pods, value: 1, periodSeconds: {POLICY_PERIOD_SECS}}}]
"#
    )
}

/// Scaling waits: a scale-out or scale-in of four steps needs four policy periods plus two metrics scrapes
/// and a few HPA syncs, about a minute; allow three, and never less than the kit's default.
fn scaling_timeout() -> Duration {
    default_timeout().max(Duration::from_secs(180))
}

#[tokio::test]
async fn hpa_scales_out_under_cpu_load_and_back_in_when_idle() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("hpa-scales-out-and-in").await?;
    let start = Instant::now();
    cluster.apply_yaml(Some(ns.name()), &manifests()).await?;
    let watch = Watch::new(&cluster, ns.name());

    let hpa = watch.hpas.get(APP).await?;
    let down = hpa
        .spec
        .behavior
        .and_then(|b| b.scale_down)
        .unwrap_or_default();
    ensure!(
        down.tolerance.as_ref().map(|q| q.0.as_str()) == Some("300m"),
        "the API server dropped or changed spec.behavior.scaleDown.tolerance (got {:?}): this cluster \
         does not support the per-direction tolerance the GUIDE relies on",
        down.tolerance
    );

    // 1. The emulated usage reaches metrics.k8s.io.
    watch
        .until("metrics.k8s.io to report 300m CPU for the pods", |s| {
            !s.pod_cpu.is_empty() && s.pod_cpu.values().all(|m| near(*m, 300.0))
        })
        .await?;
    let first_metrics = start.elapsed();
    let raw = run(cluster.kubectl().args([
        "get",
        "--raw",
        &format!("/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods", ns.name()),
    ]))
    .await?;
    let listed = pod_cpu_from_raw(&raw)?;
    ensure!(
        !listed.is_empty() && listed.values().all(|m| near(*m, 300.0)),
        "kubectl get --raw .../pods should show about 300m CPU per pod, got {listed:?} from {raw}"
    );

    // 2. Under load (300 % of the request against a 60 % target) it scales out one pod per period,
    //    up to maxReplicas and no further, and says so.
    watch
        .until(
            &format!("scale-out to {MAX_REPLICAS} ready replicas"),
            |s| s.hpa_current == Some(MAX_REPLICAS) && s.ready == MAX_REPLICAS,
        )
        .await?;
    watch
        .until("the HPA to report ScalingLimited (TooManyReplicas)", |s| {
            s.conditions
                .contains("ScalingLimited=True(TooManyReplicas)")
        })
        .await?;
    let scale_out = watch.steps(1, MAX_REPLICAS).await?;

    // 3. At 45 % (below the 60 % target, above 60 % x (1 - 0.3) = 42 %) the scale-down tolerance holds
    //    the replicas; the default tolerance of 0.1 would scale in to 4.
    cluster
        .set_emulated_cpu(ns.name(), &format!("app={APP}"), "45m")
        .await?;
    watch
        .until("the HPA to see the 45 % load", |s| {
            s.pod_cpu.len() == MAX_REPLICAS as usize
                && s.pod_cpu.values().all(|m| near(*m, 45.0))
                && s.utilization.is_some_and(|u| (40..=50).contains(&u))
        })
        .await?;
    // Longer than the scale-down stabilization window (5 s) plus three HPA syncs (5 s each).
    let hold_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < hold_until {
        let s = watch.snapshot().await?;
        if s.spec_replicas != MAX_REPLICAS || s.hpa_desired != MAX_REPLICAS {
            bail!(
                "scaled in at 45 % although the scale-down tolerance of 0.3 should hold it above 42 %: \
                 {s}\n{}",
                watch.report().await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 4. Idle (10 %) it scales back in, one pod per period, to minReplicas.
    cluster
        .set_emulated_cpu(ns.name(), &format!("app={APP}"), "10m")
        .await?;
    let idle = Instant::now();
    watch
        .until("scale-in to 1 replica", |s| {
            s.hpa_current == Some(1) && s.spec_replicas == 1 && s.ready == 1
        })
        .await?;
    let scale_in = watch.steps(-1, 1).await?;

    eprintln!(
        "timings: pod metrics {first_metrics:.0?} after apply, first step out {:.0?} after apply; \
         1 -> {MAX_REPLICAS} replicas in {scale_out:.0?} from the first step; first step in {:.0?} \
         after going idle; {MAX_REPLICAS} -> 1 in {scale_in:.0?} from the first step; whole test {:.0?}",
        watch.first_step_after(start, 1).unwrap_or_default(),
        watch.first_step_after(idle, -1).unwrap_or_default(),
        start.elapsed()
    );
    Ok(())
}

/// Within 10 % of the expected millicores (metrics-server computes a rate over a ~10 s window).
fn near(millis: f64, expected: f64) -> bool {
    (millis - expected).abs() <= expected * 0.1
}

/// Pod name -> summed container CPU (millicores) from PodMetrics objects in JSON form.
fn pod_cpu_of(items: &[serde_json::Value]) -> BTreeMap<String, f64> {
    items
        .iter()
        .filter_map(|pod| {
            let name = pod["metadata"]["name"].as_str()?.to_string();
            let cpu = pod["containers"]
                .as_array()?
                .iter()
                .map(|c| c["usage"]["cpu"].as_str().and_then(millicores))
                .sum::<Option<f64>>()?;
            Some((name, cpu))
        })
        .collect()
}

fn pod_cpu_from_raw(raw: &str) -> Result<BTreeMap<String, f64>> {
    let list: serde_json::Value = serde_json::from_str(raw)?;
    ensure!(
        list["kind"] == "PodMetricsList",
        "not a PodMetricsList: {raw}"
    );
    Ok(pod_cpu_of(list["items"].as_array().map_or(&[], |v| v)))
}

/// What the test looks at, read fresh each poll.
#[derive(Debug, Default)]
struct Snapshot {
    spec_replicas: i32,
    ready: i32,
    hpa_current: Option<i32>,
    hpa_desired: i32,
    /// The HPA's view of average CPU utilization (percent of requests).
    utilization: Option<i32>,
    /// `Type=Status(Reason)` of each HPA condition.
    conditions: String,
    pod_cpu: BTreeMap<String, f64>,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "deployment replicas={} ready={}; HPA current={:?} desired={} utilization={:?}% [{}]; \
             pod CPU (m) {:?}",
            self.spec_replicas,
            self.ready,
            self.hpa_current,
            self.hpa_desired,
            self.utilization,
            self.conditions,
            self.pod_cpu
                .values()
                .map(|m| m.round() as i64)
                .collect::<Vec<_>>()
        )
    }
}

struct Watch {
    /// Every Deployment replica count seen, in order, with when it was first seen (polls are 250 ms apart).
    replicas_log: std::sync::Mutex<Vec<(Instant, i32)>>,
    deployments: Api<Deployment>,
    hpas: Api<HorizontalPodAutoscaler>,
    events: Api<Event>,
    pod_metrics: Api<DynamicObject>,
}

impl Watch {
    fn new(cluster: &Cluster, ns: &str) -> Self {
        let gvk = GroupVersionKind::gvk("metrics.k8s.io", "v1beta1", "PodMetrics");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "pods");
        Self {
            replicas_log: std::sync::Mutex::default(),
            deployments: Api::namespaced(cluster.client(), ns),
            hpas: Api::namespaced(cluster.client(), ns),
            events: Api::namespaced(cluster.client(), ns),
            pod_metrics: Api::namespaced_with(cluster.client(), ns, &resource),
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, kube::Error> {
        let deployment = self.deployments.get(APP).await?;
        let hpa = self.hpas.get(APP).await?.status.unwrap_or_default();
        // Until metrics-server has two scrapes of a pod it lists nothing for it; an error here (the
        // aggregated API briefly unavailable) is "no metrics yet", not a test failure.
        let pods = self
            .pod_metrics
            .list(&ListParams::default().labels(&format!("app={APP}")))
            .await
            .map(|list| {
                list.items
                    .into_iter()
                    .map(|o| serde_json::to_value(o).unwrap_or_default())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let status = deployment.status.unwrap_or_default();
        let replicas = deployment.spec.replicas.unwrap_or(0);
        let mut log = self.replicas_log.lock().unwrap();
        if log.last().map(|(_, r)| *r) != Some(replicas) {
            log.push((Instant::now(), replicas));
        }
        drop(log);
        let mut conditions = String::new();
        for c in hpa.conditions.unwrap_or_default() {
            let _ = write!(
                conditions,
                "{}{}={}({})",
                if conditions.is_empty() { "" } else { " " },
                c.type_,
                c.status,
                c.reason.unwrap_or_default()
            );
        }
        Ok(Snapshot {
            spec_replicas: replicas,
            ready: status.ready_replicas.unwrap_or(0),
            hpa_current: hpa.current_replicas,
            hpa_desired: hpa.desired_replicas,
            utilization: hpa
                .current_metrics
                .unwrap_or_default()
                .into_iter()
                .find_map(|m| m.resource?.current.average_utilization),
            conditions,
            pod_cpu: pod_cpu_of(&pods),
        })
    }

    /// Polls until `done` holds. On timeout the error carries the last snapshot, the HPA's full status
    /// and its events.
    async fn until(&self, what: &str, done: impl Fn(&Snapshot) -> bool) -> Result<()> {
        let waited = wait_for(what, scaling_timeout(), || async {
            let s = self.snapshot().await.map_err(|e| e.to_string())?;
            if done(&s) { Ok(()) } else { Err(s.to_string()) }
        })
        .await;
        match waited {
            Ok(()) => Ok(()),
            Err(e @ ClusterError::Timeout { .. }) => bail!("{e}\n{}", self.report().await),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks the run of replica changes in `direction` (+1/-1) that ended at `target`: one pod per step
    /// (the Pods policy's value) and at least one policy period between two steps, less a second for
    /// polling and API latency. Returns the time from its first step to its last.
    fn check_steps(&self, direction: i32, target: i32) -> Result<Duration> {
        let log = self.replicas_log.lock().unwrap().clone();
        let shown = log.iter().map(|(_, r)| *r).collect::<Vec<_>>();
        ensure!(
            shown.iter().all(|r| (1..=MAX_REPLICAS).contains(r)),
            "replicas left [1, {MAX_REPLICAS}]: {shown:?}"
        );
        // The run: the longest suffix of the log that moves in `direction` and ends at `target`.
        let end = log.len() - 1;
        ensure!(
            log[end].1 == target,
            "replicas ended at {}, not {target}: {shown:?}",
            log[end].1
        );
        let mut first = end;
        while first > 0 && (log[first].1 - log[first - 1].1).signum() == direction {
            first -= 1;
        }
        ensure!(
            first < end,
            "no replica change towards {target} seen: {shown:?}"
        );
        for (i, pair) in log[first..=end].windows(2).enumerate() {
            let ((t0, r0), (t1, r1)) = (pair[0], pair[1]);
            ensure!(
                r1 - r0 == direction,
                "replicas went {r0} -> {r1}, expected steps of {direction} (Pods policy of 1); seen {shown:?}"
            );
            // The run's first entry is a state that was seen, not a step; its time says nothing.
            let gap = t1.duration_since(t0);
            ensure!(
                i == 0 || gap >= Duration::from_secs(POLICY_PERIOD_SECS - 1),
                "replicas went {r0} -> {r1} only {gap:.1?} after the previous step, but the policy allows \
                 1 pod per {POLICY_PERIOD_SECS}s; seen {shown:?}"
            );
        }
        Ok(log[end].0.duration_since(log[first + 1].0))
    }

    /// [`Watch::check_steps`], with the HPA's status and events when it fails.
    async fn steps(&self, direction: i32, target: i32) -> Result<Duration> {
        match self.check_steps(direction, target) {
            Ok(took) => Ok(took),
            Err(e) => bail!("{e}\n{}", self.report().await),
        }
    }

    /// How long after `since` the first change in `direction` was seen.
    fn first_step_after(&self, since: Instant, direction: i32) -> Option<Duration> {
        let log = self.replicas_log.lock().unwrap();
        log.windows(2)
            .find(|p| p[1].0 >= since && (p[1].1 - p[0].1).signum() == direction)
            .map(|p| p[1].0.duration_since(since))
    }

    /// The HPA's status and events, for failure messages.
    async fn report(&self) -> String {
        let mut out = String::from("HPA status: ");
        match self.hpas.get(APP).await {
            Ok(hpa) => {
                let status = serde_json::to_string_pretty(&hpa.status).unwrap_or_default();
                out.push_str(&status);
            }
            Err(e) => {
                let _ = write!(out, "could not read it: {e}");
            }
        }
        out.push_str("\nHPA events:");
        let selector =
            format!("involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name={APP}");
        match self
            .events
            .list(&ListParams::default().fields(&selector))
            .await
        {
            Ok(list) if list.items.is_empty() => out.push_str(" none"),
            Ok(list) => {
                for e in list.items {
                    let _ = write!(
                        out,
                        "\n  {} {} x{}: {}",
                        e.type_.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.count.unwrap_or(1),
                        e.message.unwrap_or_default()
                    );
                }
            }
            Err(e) => {
                let _ = write!(out, " could not list them: {e}");
            }
        }
        out
    }
}
