//! The operator's own HPA scales the coap-server on real CPU. An IotMonitor runs InfluxDB and the
//! CoAP server in real containers on the real node (Grafana on a kwok node; no simulator, no AQI),
//! with a small CoAP CPU request and short holds and cooldown. An in-process operator reconciles
//! it; `iot-loadtest --target coap` (the library entry point) sends readings from a
//! sensor-sim Job on the real node long enough to scale 1 → 3, then records until the HPA is back
//! at 1. The assertions are made on the recorded timeline.csv, as a user would read it; the
//! monitor's `Autoscaling` condition and its `kubectl get iotmon` column are checked on the way.
//!
//! Needs the images in the real node's containerd (`images/build.sh --load`, which `make test`
//! runs). About 5 minutes (283 s on the 2-core build machine: 1 → 2 at 10 s, → 3 at 40 s, the
//! load stops at ~152 s, → 2 at 196 s, → 1 at 226 s).

use iot_e2e::operator_support;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use iot_loadtest::recorder::Ended;
use iot_loadtest::timeline::{Row, parse_csv};
use iot_loadtest::{LoadtestArgs, Target};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{Cluster, default_timeout, repo_dir, run, wait_for};
use iot_testkit::real_node::{self, RealNode};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use operator_support::{Operator, install_crd, wait_ready};
use tokio::sync::watch;

const MAX_REPLICAS: i32 = 3;
const COOLDOWN_S: f64 = 30.0;
/// The HPA controller's sync period on the local control plane (docs/control-plane.md): a step
/// is decided at a sync, so two steps the policy allows `COOLDOWN_S` apart may be recorded up to
/// one period (plus a second of sampling at each end) closer.
const HPA_SYNC_S: f64 = 5.0;
/// How long the load runs: enough for metrics of the first pods (~40 s), two steps out (a
/// cooldown apart) and the new pods' first metrics, on a loaded machine.
const LOAD_S: u64 = 150;
/// Bound on the recording after the load: the scale-in hold plus two cooldowns and metrics
/// lag is ~2 min; `--until-scaled-in` ends it once back at 1.
const SETTLE_S: u64 = 300;

/// 250 readings/s cost the coap-server many times its 10m CPU request: the HPA averages over
/// the pods, so even spread over three the average is far above 60 %, and it asks for more
/// than the maximum. (The load's UDP sockets stay on the pod they first reached,
/// so in practice one pod carries it all; the average is what the HPA acts on.)
const PROFILE: &str = "coap:
  rate: 250
  durationSeconds: 150
  sockets: 4
  window: 4
";

fn monitor_yaml() -> Result<String> {
    let on_real_node = real_node::component_scheduling();
    Ok(real_node::monitor_yaml(
        "",
        &format!(
            "  coap: {{plaintext: true, resources: {{cpuRequest: 10m}}, {on_real_node}}}
  simulator: {{enabled: false, {on_real_node}}}
  aqi: {{enabled: false}}
  autoscaling:
    minReplicas: 1
    maxReplicas: {MAX_REPLICAS}
    cooldownSeconds: {cooldown}
    scaleOut: {{cpuPercent: 60, holdSeconds: 0}}
    scaleIn: {{cpuPercent: 42, holdSeconds: 30}}
",
            cooldown = COOLDOWN_S as i32,
        ),
    )?)
}

/// The coap-server HPA's desired replicas, one value per recorded second, with its time.
fn desired_by_second(rows: &[Row]) -> Vec<(f64, i32)> {
    let mut out: Vec<(f64, i32)> = Vec::new();
    for row in rows {
        let Some(d) = row.coap_server.desired else {
            continue;
        };
        if out.last().is_none_or(|(t, _)| *t != row.elapsed_s) {
            out.push((row.elapsed_s, d));
        }
    }
    out
}

/// The seconds at which the value changed, with the new value.
fn changes(series: &[(f64, i32)]) -> Vec<(f64, i32)> {
    series
        .windows(2)
        .filter(|w| w[0].1 != w[1].1)
        .map(|w| (w[1].0, w[1].1))
        .collect()
}

async fn autoscaling_condition(monitors: &Api<IotMonitor>) -> Result<(String, String)> {
    let m = monitors.get("lab").await?;
    let c = m
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Autoscaling")
        .context("no Autoscaling condition")?;
    Ok((c.status, c.reason))
}

#[tokio::test]
async fn the_operators_hpa_scales_coap_out_to_three_and_back_to_one_on_real_cpu() -> Result<()> {
    let cluster = Cluster::connect().await?;
    RealNode::get(&cluster).await?;
    install_crd(&cluster).await?;
    let ns = cluster.namespace("real-autoscaling").await?;
    let operator = Operator::start(cluster.client(), ns.name());
    cluster
        .apply_yaml(Some(ns.name()), &monitor_yaml()?)
        .await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    for component in ["influxdb", "coap-server"] {
        let selector = format!("app.kubernetes.io/name={component}");
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let name = list
            .items
            .first()
            .and_then(|p| p.metadata.name.clone())
            .with_context(|| format!("no {component} pod"))?;
        real_node::wait_running(&cluster, ns.name(), &name).await?;
    }

    // The HPAs found the real pods' CPU in metrics.k8s.io: the condition says so, in the column.
    wait_for(
        "the Autoscaling condition to be True",
        default_timeout().max(Duration::from_secs(180)),
        || async {
            match autoscaling_condition(&monitors).await {
                Ok((s, r)) if s == "True" => Ok(r),
                Ok(other) => Err(format!("{other:?}")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let table = run(cluster
        .kubectl()
        .args(["get", "iotmon", "lab", "--namespace", ns.name()]))
    .await?;
    ensure!(table.contains("AUTOSCALING"), "{table}");
    let (_, reason) = autoscaling_condition(&monitors).await?;
    ensure!(
        table.contains(&reason),
        "the column shows {reason}: {table}"
    );

    let out = repo_dir().join("target/e2e-loadtest/real-autoscaling");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let profile = out.join("profile.yaml");
    std::fs::write(&profile, PROFILE)?;
    let mut args = LoadtestArgs::new("lab", Target::Coap, out.clone());
    args.namespace = Some(ns.name().to_owned());
    args.profile = Some(profile);
    args.duration = Some(LOAD_S as f64);
    args.settle = SETTLE_S as f64;
    args.until_scaled_in = true;
    let started = Instant::now();
    let (_stop_tx, stop) = watch::channel(false);
    let report = iot_loadtest::run(cluster.client(), &args, stop).await?;
    let took = started.elapsed().as_secs_f64();
    operator.stop().await?;
    eprintln!("loadtest: {report:?} in {took:.0} s");

    let rows = parse_csv(&std::fs::read_to_string(&report.csv)?)?;
    let desired = desired_by_second(&rows);
    let steps = changes(&desired);
    eprintln!("coap-server HPA steps (s, replicas): {steps:?}");
    ensure!(report.load_error.is_none(), "{report:?}");
    let acked = rows.iter().map(|r| r.acked).max().unwrap_or(0);
    ensure!(
        acked > 0,
        "the load Job's readings were acknowledged: {acked}"
    );
    ensure!(
        desired.first().map(|d| d.1) == Some(1),
        "started at {:?}",
        desired.first()
    );
    let max = desired.iter().map(|d| d.1).max().unwrap_or(0);
    ensure!(max >= 3, "scaled out to only {max}: {steps:?}");
    ensure!(
        max <= MAX_REPLICAS,
        "above maxReplicas {MAX_REPLICAS}: {steps:?}"
    );
    let current_max = rows.iter().filter_map(|r| r.coap_server.current).max();
    ensure!(current_max <= Some(MAX_REPLICAS), "{current_max:?}");
    ensure!(
        report.ended == Ended::ScaledIn,
        "back at 1 replica before the settle ran out: {report:?}, steps {steps:?}"
    );
    ensure!(
        desired.last().map(|d| d.1) == Some(1),
        "ended at {:?}",
        desired.last()
    );
    // One pod per step, and steps no faster than the cooldown (less the HPA's sync jitter).
    for pair in steps.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        ensure!(
            gap >= COOLDOWN_S - HPA_SYNC_S - 2.0,
            "steps {pair:?} only {gap:.1} s apart (cooldown {COOLDOWN_S} s): {steps:?}"
        );
    }
    let mut previous = 1;
    for (t, d) in &steps {
        ensure!(
            (d - previous).abs() == 1,
            "a step of more than one pod at {t} s: {steps:?}"
        );
        previous = *d;
    }
    for file in [&report.png, &report.svg] {
        ensure!(std::fs::metadata(file)?.len() > 1000, "{file:?}");
    }
    Ok(())
}
