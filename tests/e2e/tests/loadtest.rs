#![allow(clippy::unwrap_used)]
//! `iot-loadtest` on the local control plane (kwok nodes, metrics-server). An
//! IotMonitor with short autoscaling holds is applied and reconciled by an in-process
//! operator; the recorder (`--target none`) runs while the test changes the coap-server pods'
//! emulated CPU (`kwok.x-k8s.io/usage-cpu`), and the test reads the growing `timeline.csv` as a
//! user would: per-second rows, the HPAs' replicas stepping out, pod CPU from metrics-server.
//! It then stops the run as Ctrl-C would, and the CSV and the plot are still written. A second
//! test runs the CoAP target: the sensor-sim Job is created as built and removed at the end
//! (kwok runs no containers, so the load itself is tested on the real node); a monitor whose
//! plain CoAP is closed is refused before anything is created.
//! Needs `make cluster-up`.

use iot_e2e::operator_support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use iot_loadtest::recorder::Ended;
use iot_loadtest::timeline::{Row, parse_csv};
use iot_loadtest::{LoadtestArgs, Target};
use iot_operator::constants::{IMAGE_REPOSITORY, WORKLOAD_VERSION};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{Cluster, default_timeout, repo_dir, wait_for};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use operator_support::{Operator, install_crd, wait_ready};
use tokio::sync::watch;

/// The coap-server's default CPU request.
const COAP_REQUEST_M: f64 = 50.0;

const MONITOR: &str = "apiVersion: iot.operator.dev/v1alpha1
kind: IotMonitor
metadata: {name: lab}
spec:
  aqi: {enabled: false}
  coap: {plaintext: true}          # the CoAP Job's test sends plain CoAP
  autoscaling:
    maxReplicas: 3
    cooldownSeconds: 10
    scaleOut: {cpuPercent: 60, holdSeconds: 0}
    scaleIn: {cpuPercent: 42, holdSeconds: 5}
";

/// Scaling waits: metrics-server needs ~40 s for a new pod's first point, then the HPA steps.
fn scaling_timeout() -> Duration {
    default_timeout().max(Duration::from_secs(240))
}

fn out_dir(test: &str) -> PathBuf {
    // Kept after the run (under target/, ignored by git) so the plot can be looked at.
    let dir = repo_dir().join("target/e2e-loadtest").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_rows(csv: &std::path::Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(csv).map_err(|e| format!("no timeline.csv yet: {e}"))?;
    parse_csv(&text).map_err(|e| e.to_string())
}

fn coap_cpu(rows: &[Row]) -> Vec<f64> {
    rows.iter()
        .filter_map(|r| r.pod.as_ref())
        .filter(|p| p.component == "coap-server")
        .filter_map(|p| p.cpu_m)
        .collect()
}

fn near(value: f64, expected: f64) -> bool {
    (value - expected).abs() <= expected * 0.1
}

#[tokio::test]
async fn the_recorder_writes_a_row_per_second_of_hpas_and_pod_cpu_and_plots_it() -> Result<()> {
    let cluster = Cluster::connect().await?;
    install_crd(&cluster).await?;
    let ns = cluster.namespace("loadtest-recorder").await?;
    let operator = Operator::start(cluster.client(), ns.name());
    cluster.apply_yaml(Some(ns.name()), MONITOR).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;

    let out = out_dir("recorder");
    let csv = out.join("timeline.csv");
    let mut args = LoadtestArgs::new("lab", Target::None, out.clone());
    args.namespace = Some(ns.name().to_owned());
    // The bound of the run; the test stops it earlier, as Ctrl-C would.
    args.duration = Some(600.0);
    let (stop_tx, stop) = watch::channel(false);
    let client = cluster.client();
    let recording = tokio::spawn(async move { iot_loadtest::run(client, &args, stop).await });

    // 300 % of the request: the HPA (target 60 %) scales out, one pod per 10 s, up to 3.
    cluster
        .set_emulated_cpu(ns.name(), "app.kubernetes.io/name=coap-server", "150m")
        .await?;
    wait_for(
        "the timeline to show 150m CPU and a scale-out",
        scaling_timeout(),
        || async {
            let rows = read_rows(&csv)?;
            let last = rows.last().ok_or("no rows yet")?;
            let cpu = coap_cpu(&rows);
            if cpu.iter().any(|m| near(*m, 150.0)) && last.coap_server.current >= Some(2) {
                Ok(())
            } else {
                Err(format!(
                    "{} rows; coap-server CPU seen {cpu:?}; last HPA {:?}",
                    rows.len(),
                    last.coap_server
                ))
            }
        },
    )
    .await?;
    // 20m (40 %) on every coap-server pod now running: the new value shows within a scrape.
    cluster
        .set_emulated_cpu(ns.name(), "app.kubernetes.io/name=coap-server", "20m")
        .await?;
    wait_for(
        "the timeline to show 20m CPU",
        scaling_timeout(),
        || async {
            let rows = read_rows(&csv)?;
            let cpu = coap_cpu(&rows);
            cpu.iter()
                .rev()
                .take(1)
                .all(|m| near(*m, 20.0))
                .then_some(())
                .ok_or(format!(
                    "last coap-server CPU values {:?}",
                    cpu.iter().rev().take(5).collect::<Vec<_>>()
                ))
        },
    )
    .await?;
    // A fast cluster gets here in under 30 s; the per-second checks below want a longer run.
    wait_for("the timeline to span 30 s", scaling_timeout(), || async {
        let rows = read_rows(&csv)?;
        let last = rows.last().map_or(0.0, |r| r.elapsed_s);
        (last >= 31.0)
            .then_some(())
            .ok_or(format!("the timeline spans {last:.0} s"))
    })
    .await?;

    stop_tx.send(true)?;
    let report = tokio::time::timeout(Duration::from_secs(60), recording)
        .await
        .context("the recorder stops within 60 s of the stop signal")???;
    operator.stop().await?;
    ensure!(report.ended == Ended::Interrupted, "{report:?}");

    // The CSV as written: one sample a second (a loaded machine may skip the odd one).
    let rows = read_rows(&csv).map_err(anyhow::Error::msg)?;
    ensure!(
        rows.len() == report.rows,
        "the file holds every row the run reported"
    );
    let mut seconds: Vec<u64> = rows.iter().map(|r| r.elapsed_s.floor() as u64).collect();
    seconds.dedup();
    let last = *seconds.last().unwrap();
    ensure!(last >= 30, "ran only {last} s");
    ensure!(
        seconds.windows(2).all(|w| w[1] > w[0]),
        "samples go forward in time, one per second: {seconds:?}"
    );
    ensure!(
        seconds.len() as u64 * 10 >= (last + 1) * 9,
        "{} samples over {last} s: fewer than one per second",
        seconds.len()
    );
    // Every sample has a row per pod of the monitor; all four components show.
    for component in ["influxdb", "grafana", "coap-server", "sensor-sim"] {
        ensure!(
            rows.iter()
                .any(|r| r.pod.as_ref().is_some_and(|p| p.component == component)),
            "no {component} pod in the timeline"
        );
    }
    // HPA columns: coap-server stepped out from 1, never above maxReplicas; Grafana stayed at 1.
    let coap: Vec<i32> = rows.iter().filter_map(|r| r.coap_server.current).collect();
    ensure!(
        coap.first() == Some(&1),
        "coap-server started at {:?}",
        coap.first()
    );
    ensure!(
        coap.iter().any(|c| *c >= 2) && coap.iter().all(|c| *c <= 3),
        "{coap:?}"
    );
    let grafana: Vec<i32> = rows.iter().filter_map(|r| r.grafana.current).collect();
    ensure!(
        !grafana.is_empty() && grafana.iter().all(|c| *c == 1),
        "Grafana had no load and stays at 1 replica: {grafana:?}"
    );
    // Pod CPU is metrics-server's: the emulated 150m, as 300 % of the 50m request.
    let busy = rows
        .iter()
        .filter_map(|r| r.pod.as_ref())
        .find(|p| p.component == "coap-server" && p.cpu_m.is_some_and(|m| near(m, 150.0)))
        .context("no coap-server row at 150m")?;
    ensure!(busy.cpu_request_m == Some(COAP_REQUEST_M), "{busy:?}");
    ensure!(busy.cpu_pct().is_some_and(|p| near(p, 300.0)), "{busy:?}");
    ensure!(busy.memory_mib.is_some_and(|m| m > 0.0), "{busy:?}");

    // The plot, written although the run was interrupted.
    let png = std::fs::read(&report.png)?;
    ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "PNG of {} bytes",
        png.len()
    );
    let svg = std::fs::read_to_string(&report.svg)?;
    ensure!(
        svg.contains("coap-server replicas") && svg.contains("scale out above 60 %"),
        "the SVG lacks the replicas axis or the threshold"
    );
    ensure!(
        svg.matches("<polyline").count() >= 4,
        "too few lines in the SVG"
    );
    eprintln!(
        "timeline: {} rows over {last} s in {}",
        rows.len(),
        out.display()
    );
    Ok(())
}

#[tokio::test]
async fn the_coap_target_creates_the_sensor_sim_job_and_removes_it() -> Result<()> {
    let cluster = Cluster::connect().await?;
    install_crd(&cluster).await?;
    let ns = cluster.namespace("loadtest-coap-job").await?;
    let operator = Operator::start(cluster.client(), ns.name());
    cluster.apply_yaml(Some(ns.name()), MONITOR).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;

    let mut args = LoadtestArgs::new("lab", Target::Coap, out_dir("coap-job"));
    args.namespace = Some(ns.name().to_owned());
    args.duration = Some(20.0);
    // The plaintext Job: the DTLS one waits for the operator to key its devices first.
    args.plaintext = true;
    let (_stop_tx, stop) = watch::channel(false);
    let client = cluster.client();
    let running = tokio::spawn(async move { iot_loadtest::run(client, &args, stop).await });

    let jobs: Api<Job> = Api::namespaced(cluster.client(), ns.name());
    let selector = ListParams::default().labels("app.kubernetes.io/name=loadtest");
    let job = wait_for("the load Job", default_timeout(), || async {
        let list = jobs.list(&selector).await.map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .next()
            .ok_or("no Job yet".to_string())
    })
    .await?;
    let pod = job.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let image = format!("{IMAGE_REPOSITORY}/sensor-sim:{WORKLOAD_VERSION}");
    ensure!(
        c.image.as_ref() == Some(&image),
        "{:?}, not {image}",
        c.image
    );
    let env = c.env.clone().unwrap_or_default();
    ensure!(
        env.iter()
            .any(|e| e.name == "COAP_SERVER" && e.value.as_deref() == Some("lab-coap-server:5683")),
        "{env:?}"
    );

    let report = tokio::time::timeout(scaling_timeout(), running)
        .await
        .context("the run is bounded")???;
    operator.stop().await?;
    // kwok runs no container, so there is no log to follow: the run says the load failed.
    ensure!(report.load_error.is_some(), "{report:?}");
    ensure!(report.exit_code() == std::process::ExitCode::from(2));
    let left = jobs.list(&selector).await?;
    ensure!(
        left.items
            .iter()
            .all(|j| j.metadata.deletion_timestamp.is_some()),
        "the load Job is still there: {:?}",
        left.items
            .iter()
            .map(|j| &j.metadata.name)
            .collect::<Vec<_>>()
    );
    ensure!(report.csv.exists() && report.png.exists() && report.svg.exists());
    Ok(())
}

#[tokio::test]
async fn the_plaintext_coap_target_refuses_a_monitor_without_plain_coap() -> Result<()> {
    let cluster = Cluster::connect().await?;
    install_crd(&cluster).await?;
    let ns = cluster.namespace("loadtest-dtls-only").await?;
    // No operator needed: the tool reads the monitor and resolves it itself.
    cluster
        .apply_yaml(Some(ns.name()), operator_support::MINIMAL)
        .await?;
    let mut args = LoadtestArgs::new("lab", Target::Coap, out_dir("dtls-only"));
    args.namespace = Some(ns.name().to_owned());
    args.plaintext = true;
    let (_stop_tx, stop) = watch::channel(false);
    let error = iot_loadtest::run(cluster.client(), &args, stop)
        .await
        .expect_err("plain CoAP is closed");
    ensure!(
        matches!(error, iot_loadtest::LoadtestError::PlaintextClosed(ref name) if name == "lab"),
        "{error}"
    );
    ensure!(error.to_string().contains("plaintext"), "{error}");
    let jobs: Api<Job> = Api::namespaced(cluster.client(), ns.name());
    ensure!(
        jobs.list(&ListParams::default()).await?.items.is_empty(),
        "no Job created"
    );
    Ok(())
}
