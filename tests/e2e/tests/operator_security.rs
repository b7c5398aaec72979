//! Every pod the operator creates is admitted in a namespace that enforces the `restricted` Pod
//! Security Standard.

use iot_e2e::operator_support;

use anyhow::{Result, ensure};
use iot_operator::crd::IotMonitor;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use operator_support::{MINIMAL, Operator, setup_with_labels, wait_ready};

#[tokio::test]
async fn every_pod_is_admitted_under_the_restricted_standard() -> Result<()> {
    let (cluster, ns) = setup_with_labels(
        "operator-restricted",
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await?;
    let operator = Operator::start(cluster.client(), ns.name());
    cluster.apply_yaml(Some(ns.name()), MINIMAL).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    // Ready needs every component's pods, so Ready means every pod was admitted.
    wait_ready(&monitors, "lab").await?;
    let pods = Api::<Pod>::namespaced(cluster.client(), ns.name())
        .list(&ListParams::default())
        .await?;
    ensure!(pods.items.len() >= 5, "{} pods", pods.items.len());
    let events = Api::<Event>::namespaced(cluster.client(), ns.name())
        .list(&ListParams::default())
        .await?;
    let refused: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .filter_map(|e| e.message.clone())
        .collect();
    ensure!(refused.is_empty(), "pods refused: {refused:?}");
    operator.stop().await
}
