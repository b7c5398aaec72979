//! The whole stack for real. The chart's default install, watching one namespace, runs the
//! operator's own image as a pod on the real node. It reconciles an IotMonitor whose InfluxDB,
//! CoAP server, simulator and AQI ingestor run as real containers in a namespace that enforces
//! the `restricted` Pod Security Standard; Grafana goes to a kwok node, as its image cannot be had
//! on this machine. Then data flows through every path, and four faults lose nothing. CoAP is
//! the default: DTLS only, for devices with keys the operator issues; plain CoAP is closed.
//!
//! Needs the images in the real node's containerd (`images/build.sh --load`, which `make test`
//! runs) and libcoap's coap-client-openssl on this machine.

use iot_e2e::operator_support;
use iot_e2e::stack_influx::StackInflux;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{Cluster, default_timeout, repo_dir, run, wait_for};
use iot_testkit::dashboards::{self, Macros, database_of, has_values, link_variables, queries};
use iot_testkit::real_node::{self, REAL_NODE, REAL_NODE_LABEL, REAL_NODE_TAINT, RealNode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use operator_support::{first_container_env, install_crd, wait_ready};
use serde_json::{Value, json};

/// The Helm release; its ClusterRole and binding are named after it.
const RELEASE: &str = "iot-real";
const RESTRICTED: &[(&str, &str)] = &[
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
];
/// The AQI snapshot the in-cluster ingestor polls from this machine: real Sensor.Community
/// records of 2019-04-16.
const SNAPSHOT: &str =
    "workloads/aqi-ingestor/tests/fixtures/basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json";

#[tokio::test]
async fn the_whole_stack_runs_for_real_and_loses_nothing_in_faults() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let node = RealNode::get(&cluster).await?;
    install_crd(&cluster).await?;
    let ns = cluster
        .namespace_with_labels("real-stack", RESTRICTED)
        .await?;
    let snapshot_url = serve_snapshot(node.host_address()).await?;

    let operator_pod = install_operator(&cluster, ns.name()).await?;
    let started = Instant::now();
    cluster
        .apply_yaml(Some(ns.name()), &monitor_yaml(&snapshot_url, 2)?)
        .await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;
    for pod in ["influxdb", "coap-server", "sensor-sim", "aqi-ingestor"] {
        let name = pod_of(&cluster, ns.name(), pod).await?;
        real_node::wait_running(&cluster, ns.name(), &name).await?;
    }
    eprintln!(
        "apply to Ready, the stack on the real node: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let grafana = pod_of(&cluster, ns.name(), "grafana").await?;
    let grafana_node = Api::<Pod>::namespaced(cluster.client(), ns.name())
        .get(&grafana)
        .await?
        .spec
        .and_then(|s| s.node_name)
        .unwrap_or_default();
    ensure!(
        grafana_node != REAL_NODE,
        "Grafana must stay on a kwok node"
    );
    let log = real_node::logs(&cluster, ns.name(), &operator_pod, None).await?;
    ensure!(!log.is_empty(), "the operator logged nothing");

    let influx = Influx::connect(&cluster, ns.name()).await?;

    // 1. The simulator pod's readings reach InfluxDB through the coap-server Service.
    influx.wait_count_above("dht", "temperature", "", 0).await?;

    // 2. libcoap's DTLS client on this machine, as the device host-1 with the key the operator
    // issued, through the coaps:// NodePort. Plain CoAP is closed: the Service has no port for it.
    let (node_port, plain_port) = coap_node_ports(&cluster, ns.name()).await?;
    ensure!(plain_port.is_none(), "plain CoAP is open on the Service");
    let coaps = format!(
        "coaps://{}:{node_port}/sensors/dht/temperature",
        node.address
    );
    let key = device_key(&cluster, ns.name(), "host-1").await?;
    let answer = coaps_post(&coaps, "host-1", &key, "21.5").await?;
    ensure!(
        answer.contains("saved successfully"),
        "coap-client-openssl: {answer}"
    );
    influx
        .wait_count_above(
            "dht",
            "temperature",
            "place = 'from-the-host' AND sensor = 'host-1'",
            0,
        )
        .await?;
    // A wrong key and a forged tag store nothing.
    let wrong = coaps_post(&coaps, "host-1", "not-the-key-0123456789", "66.6").await?;
    ensure!(!wrong.contains("saved"), "a wrong key was taken: {wrong}");
    let forged = coaps_post(&format!("{coaps}?sensor=sim-1"), "host-1", &key, "66.7").await?;
    ensure!(forged.contains("4.03"), "a forged sensor tag: {forged}");
    ensure!(
        influx
            .count("dht", "temperature", "value", "value > 66")
            .await?
            == 0,
        "a refused reading was stored"
    );

    // Devices added, re-keyed and removed take effect without a restart of coap-server.
    let restarts_before_devices = restart_counts(&cluster, ns.name()).await?;
    devices_take_effect_without_a_restart(&cluster, ns.name(), &monitors, &coaps).await?;
    ensure!(
        restart_counts(&cluster, ns.name()).await? == restarts_before_devices,
        "a pod restarted while devices changed"
    );

    // 3. The AQI ingestor stores exactly what the same ingestor computes from the snapshot here.
    let expected = dry_run_points(&snapshot_url).await?;
    ensure!(expected > 0, "the dry run computed no AQI points");
    wait_for(
        &format!("{expected} AQI points in InfluxDB"),
        default_timeout(),
        || async {
            let n = influx
                .count("aqi", "air_quality", "latitude", "")
                .await
                .map_err(|e| e.to_string())?;
            if n == expected {
                Ok(())
            } else {
                Err(format!("{n} points"))
            }
        },
    )
    .await?;

    // 4. Every query of the shipped dashboards returns data from this InfluxDB: the DHT charts
    // over the last 30 minutes, the AQI dashboard over the snapshot's day for each measure.
    let checked = every_dashboard_query_has_data(&influx).await?;
    eprintln!("{checked} dashboard queries returned data");

    // Fault 1: the coap-server pod is deleted while a simulator sends; acknowledged = stored.
    fault_coap_server_pod(&cluster, ns.name(), &influx).await?;

    // Fault 2: the InfluxDB pod is deleted; its volume keeps the data, credentials still work.
    let before = influx.count("dht", "temperature", "value", "").await?;
    replace_pod(&cluster, ns.name(), "influxdb").await?;
    // Until kube-proxy has the new endpoint, the Service rejects connections.
    let after = wait_for(
        "InfluxDB to answer through its Service again",
        default_timeout(),
        || async {
            influx
                .count("dht", "temperature", "value", "")
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    ensure!(
        after >= before,
        "InfluxDB lost data in a restart: {before} points before, {after} after"
    );
    // The writer's credentials too: the simulator's readings are stored again.
    influx
        .wait_count_above("dht", "temperature", "", after)
        .await?;

    // Fault 3: the operator pod is deleted mid-reconcile; the new one finishes the change.
    let monitor = monitors.get("lab").await?;
    let generation = monitor.metadata.generation.unwrap_or_default();
    monitors
        .patch(
            "lab",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"simulator": {"sensors": 3}}})),
        )
        .await?;
    delete_pod(&cluster, ns.name(), &operator_pod).await?;
    wait_for(
        "the new operator to reconcile the change",
        default_timeout() * 2,
        || async {
            let m = monitors.get("lab").await.map_err(|e| e.to_string())?;
            let observed = m
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or_default();
            let ready = operator_support::condition(&m, "Ready")
                .is_some_and(|(status, _, _)| status == "True");
            if observed > generation && ready {
                Ok(())
            } else {
                Err(format!("observedGeneration {observed}, ready {ready}"))
            }
        },
    )
    .await?;
    let sim = Api::<Deployment>::namespaced(cluster.client(), ns.name())
        .get("lab-sensor-sim")
        .await?;
    ensure!(
        first_container_env(&sim, "SIM_SENSORS").as_deref() == Some("3"),
        "the simulator was not updated: {:?}",
        first_container_env(&sim, "SIM_SENSORS")
    );

    // Fault 4: the kubelet restarts. The containers keep running, and data keeps flowing.
    let restarts_before = restart_counts(&cluster, ns.name()).await?;
    let stored = influx.count("dht", "temperature", "value", "").await?;
    real_node::restart_kubelet(&cluster).await?;
    RealNode::get(&cluster).await?;
    influx
        .wait_count_above("dht", "temperature", "", stored)
        .await?;
    let restarts_after = restart_counts(&cluster, ns.name()).await?;
    for (pod, before) in &restarts_before {
        if let Some(after) = restarts_after.get(pod) {
            ensure!(
                after == before,
                "{pod} restarted with the kubelet ({before} → {after})"
            );
        }
    }
    wait_ready(&monitors, "lab").await?;
    coap_server_reports_its_answers(&influx).await?;
    report_container_memory(&cluster, ns.name()).await;

    run(cluster
        .helm()
        .args(["uninstall", RELEASE, "--namespace", ns.name()]))
    .await?;
    Ok(())
}

/// `helm install` of the chart with its default values, so the operator watches every namespace
/// (no other test uses the cluster meanwhile: `make test` runs this binary in its cluster-wide
/// phase, scripts/test.sh, and it has one test), except that it runs on the real node. Returns the name of the operator's pod once it
/// runs there.
async fn install_operator(cluster: &Cluster, ns: &str) -> Result<String> {
    let chart = repo_dir().join("charts/iot-operator");
    run(cluster.helm().args([
        "install",
        RELEASE,
        &chart.to_string_lossy(),
        "--namespace",
        ns,
        "--set-json",
        &format!(
            "nodeSelector={{\"{}\":\"{}\"}}",
            REAL_NODE_LABEL.0, REAL_NODE_LABEL.1
        ),
        "--set-json",
        &format!(
            "tolerations=[{{\"key\":\"{REAL_NODE_TAINT}\",\"operator\":\"Equal\",\"value\":\"true\",\
             \"effect\":\"NoSchedule\"}}]"
        ),
    ]))
    .await?;
    let name = wait_for("the operator's pod", default_timeout(), || async {
        operator_pod_name(cluster, ns)
            .await
            .ok_or_else(|| "no pod yet".to_string())
    })
    .await?;
    // Ready means its own /readyz passed, through the kubelet's probe.
    let pod = real_node::wait_running(cluster, ns, &name).await?;
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .context("no image")?;
    ensure!(
        image.starts_with("ghcr.io/iot-operator/iot-operator:"),
        "{image}"
    );
    Ok(name)
}

async fn operator_pod_name(cluster: &Cluster, ns: &str) -> Option<String> {
    Api::<Pod>::namespaced(cluster.client(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=iot-operator"))
        .await
        .ok()?
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.metadata.name)
}

/// The devices the test registers: one on this machine, two for the load Job of the first fault.
const DEVICES: &str = "{name: host-1, place: from-the-host}, {name: fault-1, place: fault-coap}, \
    {name: fault-2, place: fault-coap}";

/// The IotMonitor: everything but Grafana on the real node, with the locally built InfluxDB image,
/// a real volume, the CoAP Service as a NodePort, and the AQI snapshot from this machine. The
/// snapshot's records are from 2019: with the default 30-day retention InfluxDB drops them.
fn monitor_yaml(snapshot_url: &str, sensors: u32) -> Result<String> {
    let on_real_node = real_node::component_scheduling();
    Ok(real_node::monitor_yaml(
        "retention: INF",
        &format!(
            "  coap: {{serviceType: NodePort, devices: [{DEVICES}], {on_real_node}}}
  simulator: {{enabled: true, sensors: {sensors}, intervalSeconds: 1, {on_real_node}}}
  aqi: {{enabled: true, source: \"{snapshot_url}\", pollSeconds: 30, {on_real_node}}}
"
        ),
    )?)
}

/// Serves the snapshot on this machine's address on the node's link, for the pods' AQI ingestor.
async fn serve_snapshot(host: Ipv4Addr) -> Result<String> {
    let body = std::fs::read(repo_dir().join(SNAPSHOT))?;
    let app = axum::Router::new().route(
        "/data.24h.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((host, 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/data.24h.json"))
}

/// How many `air_quality` points the ingestor computes from the URL, by its own dry run here.
async fn dry_run_points(url: &str) -> Result<u64> {
    let out = tokio::process::Command::new(iot_testkit::bins::workspace_bin("aqi-ingestor"))
        .args(["--once", "--dry-run", "--source", url])
        .args(["--http-addr", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .await?;
    ensure!(out.status.success(), "aqi-ingestor --dry-run: {out:?}");
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| l.starts_with("air_quality,") || l.starts_with("air_quality "))
        .count() as u64)
}

/// The name of the running (not terminating) pod of one component of `lab`.
async fn pod_of(cluster: &Cluster, ns: &str, component: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns);
    let selector = format!("app.kubernetes.io/instance=lab,app.kubernetes.io/name={component}");
    Ok(
        wait_for(&format!("a {component} pod"), default_timeout(), || async {
            pods.list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .find(|p| p.metadata.deletion_timestamp.is_none())
                .and_then(|p| p.metadata.name)
                .ok_or_else(|| "none yet".to_string())
        })
        .await?,
    )
}

async fn delete_pod(cluster: &Cluster, ns: &str, name: &str) -> Result<()> {
    Api::<Pod>::namespaced(cluster.client(), ns)
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// Deletes the component's pod and waits until a new one (told apart by UID: a StatefulSet's
/// comes back under the same name) runs, ready, on the real node.
async fn replace_pod(cluster: &Cluster, ns: &str, component: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns);
    let old = pod_of(cluster, ns, component).await?;
    let old_uid = pods.get(&old).await?.metadata.uid;
    delete_pod(cluster, ns, &old).await?;
    let name = wait_for(
        &format!("a new {component} pod instead of {old}"),
        default_timeout(),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!(
                    "app.kubernetes.io/instance=lab,app.kubernetes.io/name={component}"
                )))
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|p| p.metadata.uid != old_uid && p.metadata.deletion_timestamp.is_none())
                .and_then(|p| p.metadata.name)
                .ok_or_else(|| "only the old pod".to_string())
        },
    )
    .await?;
    real_node::wait_running(cluster, ns, &name).await?;
    Ok(name)
}

/// The CoAP Service's node ports: coaps://, and plain CoAP's if it is open.
async fn coap_node_ports(cluster: &Cluster, ns: &str) -> Result<(i32, Option<i32>)> {
    let ports = Api::<Service>::namespaced(cluster.client(), ns)
        .get("lab-coap-server")
        .await?
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default();
    let node_port = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| p.node_port)
    };
    let coaps = node_port("coaps").context("the CoAP Service has no nodePort for coaps")?;
    Ok((coaps, node_port("coap")))
}

/// A device's key as the operator issued it, from the Secret `lab-devices`.
async fn device_key(cluster: &Cluster, ns: &str, device: &str) -> Result<String> {
    let secret = Api::<Secret>::namespaced(cluster.client(), ns)
        .get("lab-devices")
        .await?;
    let key = secret
        .data
        .and_then(|d| d.get(device).cloned())
        .with_context(|| format!("no key for {device} in lab-devices"))?;
    Ok(String::from_utf8(key.0)?)
}

/// libcoap's DTLS client posts `value` to `url` as `identity` with `key`; what it printed (its
/// exit status is not the answer's: it exits 0 on a 4.xx too).
async fn coaps_post(url: &str, identity: &str, key: &str, value: &str) -> Result<String> {
    let coap_client = "/usr/bin/coap-client-openssl";
    ensure!(
        std::path::Path::new(coap_client).exists(),
        "libcoap's coap-client-openssl is missing: run `make deps` (Debian package libcoap3-bin)"
    );
    let out = tokio::process::Command::new(coap_client)
        .args([
            "-B", "5", "-u", identity, "-k", key, "-m", "post", "-e", value, url,
        ])
        .output()
        .await?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// How long a device change takes to reach coap-server: a device added to the spec can send
/// with its new key; a key deleted from the Secret is replaced, the old one refused and the new
/// one taken; a device removed from the spec is refused, within 60 s.
async fn devices_take_effect_without_a_restart(
    cluster: &Cluster,
    ns: &str,
    monitors: &Api<IotMonitor>,
    coaps: &str,
) -> Result<()> {
    let set_devices = |extra: &'static str| async move {
        let devices: Value = serde_yaml::from_str(&format!("[{DEVICES}{extra}]"))?;
        monitors
            .patch(
                "lab",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"coap": {"devices": devices}}})),
            )
            .await?;
        anyhow::Ok(())
    };
    let sends = |identity: &'static str, key: String| async move {
        let answer = coaps_post(coaps, identity, &key, "20.0")
            .await
            .map_err(|e| e.to_string())?;
        if answer.contains("saved successfully") {
            Ok(())
        } else {
            Err(format!("not taken yet: {answer}"))
        }
    };
    let refused = |identity: &'static str, key: String| async move {
        let answer = coaps_post(coaps, identity, &key, "20.0")
            .await
            .map_err(|e| e.to_string())?;
        if answer.contains("saved") {
            Err(format!("still taken: {answer}"))
        } else {
            Ok(())
        }
    };

    // Added.
    let started = Instant::now();
    set_devices(", {name: late-1, place: late}").await?;
    let key = wait_for("late-1's key", default_timeout(), || async {
        device_key(cluster, ns, "late-1")
            .await
            .map_err(|e| e.to_string())
    })
    .await?;
    wait_for("late-1 to be taken", Duration::from_secs(60), || {
        sends("late-1", key.clone())
    })
    .await?;
    let added = started.elapsed();

    // Re-keyed: its key deleted from the Secret.
    let started = Instant::now();
    Api::<Secret>::namespaced(cluster.client(), ns)
        .patch(
            "lab-devices",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"late-1": null}})),
        )
        .await?;
    let rotated = wait_for("late-1's new key", default_timeout(), || async {
        match device_key(cluster, ns, "late-1").await {
            Ok(k) if k != key => Ok(k),
            Ok(_) => Err("the old key".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    wait_for(
        "late-1's new key to be taken",
        Duration::from_secs(60),
        || sends("late-1", rotated.clone()),
    )
    .await?;
    refused("late-1", key.clone())
        .await
        .map_err(|e| anyhow::anyhow!("the old key of late-1: {e}"))?;
    let rekeyed = started.elapsed();

    // Removed.
    let started = Instant::now();
    set_devices("").await?;
    wait_for("late-1 to be refused", Duration::from_secs(60), || {
        refused("late-1", rotated.clone())
    })
    .await?;
    let revoked = started.elapsed();
    eprintln!(
        "device changes took effect without a restart: added {:.1} s, re-keyed {:.1} s, \
         removed {:.1} s",
        added.as_secs_f64(),
        rekeyed.as_secs_f64(),
        revoked.as_secs_f64()
    );
    Ok(())
}

/// A `sensor-sim load` Job in the cluster sends a bounded series of readings over DTLS, as the
/// devices fault-1 and fault-2 (their keys mounted from the operator's Secret), to the coap-server
/// Service; the coap-server pod is deleted while it runs, and the devices handshake again with
/// the new one. Every reading it saw acknowledged must be in InfluxDB, once.
async fn fault_coap_server_pod(cluster: &Cluster, ns: &str, influx: &Influx) -> Result<()> {
    const PLACE: &str = "fault-coap";
    let job = format!(
        "apiVersion: batch/v1
kind: Job
metadata: {{name: fault-coap}}
spec:
  backoffLimit: 0
  template:
    metadata: {{labels: {{app: fault-coap}}}}
    spec:
      restartPolicy: Never
{scheduling}      securityContext: {{runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      volumes:
      - name: keys
        secret: {{secretName: lab-devices, defaultMode: 288, items: [{{key: fault-1, path: fault-1}}, {{key: fault-2, path: fault-2}}]}}
      containers:
      - name: load
        image: {image}
        imagePullPolicy: Never
        args: [load, --server, 'lab-coap-server:5684', --keys-dir, /keys, --count, '400', --rate, '20',
               --sockets, '2', --window, '4', --json, --http-addr, '127.0.0.1:9090']
        volumeMounts: [{{name: keys, mountPath: /keys, readOnly: true}}]
        securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
",
        scheduling = real_node::scheduling_yaml(6),
        image = real_node::image_ref("sensor-sim")?,
    );
    cluster.apply_yaml(Some(ns), &job).await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns);
    let load_pod = wait_for("the load Job's pod", default_timeout(), || async {
        pods.list(&ListParams::default().labels("app=fault-coap"))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .find_map(|p| p.metadata.name)
            .ok_or_else(|| "none yet".to_string())
    })
    .await?;
    real_node::wait_running(cluster, ns, &load_pod).await?;
    // Some readings stored before the fault, so it strikes mid-run.
    influx
        .wait_count_above("dht", "temperature", &format!("place = '{PLACE}'"), 20)
        .await?;
    replace_pod(cluster, ns, "coap-server").await?;

    let phase = wait_for("the load Job to end", default_timeout() * 3, || async {
        let pod = pods.get(&load_pod).await.map_err(|e| e.to_string())?;
        match pod.status.and_then(|s| s.phase).as_deref() {
            Some(p @ ("Succeeded" | "Failed")) => Ok(p.to_owned()),
            phase => Err(format!("phase {phase:?}")),
        }
    })
    .await?;
    let log = real_node::logs(cluster, ns, &load_pod, None).await?;
    let summary: Value = log
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v.get("acked").is_some())
        })
        .with_context(|| format!("no summary in the load Job's log ({phase}): {log}"))?;
    let acked = summary["acked"].as_u64().context("acked")?;
    let failed = summary["failed"].as_u64().context("failed")?;
    let stored = influx
        .count("dht", "temperature", "value", &format!("place = '{PLACE}'"))
        .await?;
    eprintln!("coap-server pod deleted under load: {summary}; stored {stored}");
    ensure!(acked > 0, "nothing was acknowledged: {summary}");
    ensure!(
        stored == acked,
        "{acked} readings acknowledged but {stored} stored: {summary}"
    );
    ensure!(
        failed == 0,
        "{failed} readings were given up while the coap-server pod was replaced: {summary}"
    );
    Ok(())
}

async fn every_dashboard_query_has_data(influx: &Influx) -> Result<usize> {
    let dht = Macros {
        time_filter: "time >= now() - 30m".into(),
        interval: "10s",
        range_ms: (0, 30 * 60 * 1000),
        // Half an hour reads raw points, whatever the tiers.
        vars: vec![("tier".into(), "autogen".into())],
    };
    let aqi_dashboard = dashboards::load("aqi.json");
    let mut runs = vec![(dashboards::load("dht.json"), dht)];
    for measure in ["P2", "P1", "aqi"] {
        let link = format!("?var-measure_name={measure}&var-location_id=.*");
        let mut vars = link_variables(&aqi_dashboard, &link);
        vars.push(("tier".into(), "autogen".into()));
        let macros = Macros {
            time_filter: "time >= '2019-04-15T00:00:00Z' AND time <= '2019-04-18T00:00:00Z'".into(),
            interval: "5m",
            range_ms: (0, 3 * 86_400_000),
            vars,
        };
        runs.push((aqi_dashboard.clone(), macros));
    }
    let mut checked = 0;
    for (dashboard, macros) in &runs {
        for (title, uid, q) in queries(dashboard) {
            let q = macros.expand(&q);
            let answer = influx.query(database_of(&uid), &q).await?;
            ensure!(
                has_values(&answer),
                "{} / {title}: no data for\n  {q}\n  {answer}",
                dashboard["title"]
            );
            checked += 1;
        }
    }
    Ok(checked)
}

/// Restart counts of every container of the namespace's pods, by pod/container.
/// Every coap-server pod reports its answers to InfluxDB once a minute (what Grafana's
/// IngestFailing reads), tagged with the pod's own name.
async fn coap_server_reports_its_answers(influx: &Influx) -> Result<()> {
    let datagrams = wait_for(
        "coap-server's answer reports in InfluxDB",
        default_timeout() * 2,
        || async {
            let q = r#"SELECT sum("datagrams") FROM "coap_server""#;
            let answer = influx.query("dht", q).await.map_err(|e| e.to_string())?;
            match answer["results"][0]["series"][0]["values"][0][1].as_u64() {
                Some(n) if n > 0 => Ok(n),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let answer = influx
        .query(
            "dht",
            r#"SHOW TAG VALUES FROM "coap_server" WITH KEY = "pod""#,
        )
        .await?;
    let pods: Vec<&str> = answer["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r[1].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        !pods.is_empty() && pods.iter().all(|p| p.starts_with("lab-coap-server-")),
        "reports should carry the coap-server pods' names: {pods:?}"
    );
    eprintln!("coap-server reported {datagrams} datagrams from pods {pods:?}");
    Ok(())
}

async fn restart_counts(cluster: &Cluster, ns: &str) -> Result<BTreeMap<String, i32>> {
    let pods = Api::<Pod>::namespaced(cluster.client(), ns)
        .list(&ListParams::default())
        .await?;
    let mut counts = BTreeMap::new();
    for pod in pods.items {
        let name = pod.metadata.name.unwrap_or_default();
        let on_real_node = pod.spec.and_then(|s| s.node_name).as_deref() == Some(REAL_NODE);
        if !on_real_node {
            continue;
        }
        for c in pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
        {
            counts.insert(format!("{name}/{}", c.name), c.restart_count);
        }
    }
    Ok(counts)
}

/// Prints each container's memory as the kubelet reports it (`/metrics/resource`: the working
/// set, what the kubelet evicts on and `kubectl top` shows), and the pods' RSS from cAdvisor
/// (which this node reports per pod cgroup only). For the record: nothing is asserted on it.
async fn report_container_memory(cluster: &Cluster, ns: &str) {
    let needle = format!("namespace=\"{ns}\"");
    for (endpoint, metric) in [
        ("resource", "container_memory_working_set_bytes{"),
        ("cadvisor", "container_memory_rss{"),
    ] {
        let path = format!("/api/v1/nodes/{REAL_NODE}/proxy/metrics/{endpoint}");
        let Ok(text) = run(cluster.kubectl().args(["get", "--raw", &path])).await else {
            eprintln!("no {endpoint} metrics from the kubelet");
            continue;
        };
        for line in text.lines() {
            if !(line.starts_with(metric) && line.contains(&needle)) {
                continue;
            }
            let label = |key: &str| {
                line.split(&format!("{key}=\""))
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or("")
                    .to_owned()
            };
            let container = match label("container") {
                c if c.is_empty() => "(pod)".to_owned(),
                c => c,
            };
            let bytes: f64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            eprintln!(
                "{:<28} {:<48} {:>7.1} MiB",
                metric.trim_end_matches('{'),
                format!("{}/{container}", label("pod")),
                bytes / 1048576.0
            );
        }
    }
}

/// The stack's InfluxDB, reached from this machine through its ClusterIP with the generated admin
/// credentials.
struct Influx(StackInflux);

impl Influx {
    async fn connect(cluster: &Cluster, ns: &str) -> Result<Self> {
        Ok(Self(
            StackInflux::connect(cluster, ns, Duration::from_secs(5)).await?,
        ))
    }

    /// `count(field)` of a measurement, optionally `WHERE` a condition; 0 when there is none.
    async fn count(&self, db: &str, measurement: &str, field: &str, filter: &str) -> Result<u64> {
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {filter}")
        };
        let q = format!("SELECT count({field}) FROM {measurement}{filter}");
        let answer = self.query(db, &q).await?;
        Ok(answer["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0))
    }

    /// One InfluxQL query as the admin; an error when InfluxDB reports one.
    async fn query(&self, db: &str, q: &str) -> Result<Value> {
        self.0.query(db, q).await
    }

    /// Waits until more than `n` points match (InfluxDB may be restarting meanwhile).
    async fn wait_count_above(
        &self,
        db: &str,
        measurement: &str,
        filter: &str,
        n: u64,
    ) -> Result<u64> {
        Ok(wait_for(
            &format!("more than {n} points in {db}.{measurement} {filter}"),
            default_timeout() * 2,
            || async {
                match self.count(db, measurement, "value", filter).await {
                    Ok(c) if c > n => Ok(c),
                    Ok(c) => Err(format!("{c} points")),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?)
    }
}
