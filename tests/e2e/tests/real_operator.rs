//! The operator's own image, installed with the Helm chart, runs as a real pod on the real node:
//! it reaches the API server through the `kubernetes` Service, takes its Lease, passes its probes
//! and reconciles an IotMonitor to Ready. Needs the image in the node's containerd
//! (`images/build.sh --load iot-operator`, which `make test` runs).

mod operator_support;

use anyhow::{Context as _, Result, ensure};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{Cluster, default_timeout, repo_dir, run, wait_for};
use iot_testkit::real_node::{self, REAL_NODE_LABEL, REAL_NODE_TAINT, RealNode};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use operator_support::{install_crd, wait_ready};

#[tokio::test]
async fn the_chart_runs_the_operator_image_as_a_real_pod_that_reconciles() -> Result<()> {
    let cluster = Cluster::connect().await?;
    RealNode::get(&cluster).await?;
    install_crd(&cluster).await?;
    let ns = cluster
        .namespace_with_labels(
            "real-operator",
            &[
                ("pod-security.kubernetes.io/enforce", "restricted"),
                ("pod-security.kubernetes.io/enforce-version", "latest"),
            ],
        )
        .await?;
    // The chart's defaults, except that it watches only this namespace (other tests run operators
    // of their own in theirs) and is scheduled to the real node.
    let chart = repo_dir().join("charts/iot-operator");
    run(cluster.helm().args([
        "install",
        "iot",
        &chart.to_string_lossy(),
        "--namespace",
        ns.name(),
        "--set",
        &format!("watchNamespace={}", ns.name()),
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

    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    let name = wait_for("the operator's pod", default_timeout(), || async {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=iot-operator"))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .first()
            .and_then(|p| p.metadata.name.clone())
            .ok_or_else(|| "no pod yet".to_string())
    })
    .await?;
    // Ready means its own /readyz passed, through the kubelet's probe.
    let pod = real_node::wait_running(&cluster, ns.name(), &name).await?;
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

    cluster
        .apply_yaml(
            Some(ns.name()),
            "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {name: lab}\nspec: {}\n",
        )
        .await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;
    let log = real_node::logs(&cluster, ns.name(), &name, None).await?;
    ensure!(!log.is_empty(), "the operator logged nothing");

    run(cluster
        .helm()
        .args(["uninstall", "iot", "--namespace", ns.name()]))
    .await?;
    Ok(())
}
