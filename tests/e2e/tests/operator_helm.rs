//! The Helm chart installs, and the RBAC it grants is enough: the operator, running with the
//! chart's ServiceAccount token, takes the Lease and reconciles an IotMonitor to Ready.

mod operator_support;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use iot_operator::controller;
use iot_operator::crd::IotMonitor;
use iot_operator::leader::{self, Ended};
use iot_testkit::cluster::{Cluster, repo_dir, run};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use operator_support::{MINIMAL, context, setup, wait_ready};
use tokio::sync::watch;

/// A client that authenticates as `system:serviceaccount:<ns>:<account>`.
async fn client_as(cluster: &Cluster, ns: &str, account: &str) -> Result<kube::Client> {
    let token = run(cluster
        .kubectl()
        .args(["create", "token", account, "-n", ns]))
    .await?;
    let mut kubeconfig: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(cluster.kubeconfig())?)?;
    kubeconfig["users"] = serde_yaml::from_str(&format!(
        "[{{name: sa, user: {{token: {}}}}}]",
        token.trim()
    ))?;
    if let Some(contexts) = kubeconfig["contexts"].as_sequence_mut() {
        for context in contexts {
            context["context"]["user"] = "sa".into();
        }
    }
    let kubeconfig = Kubeconfig::from_yaml(&serde_yaml::to_string(&kubeconfig)?)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test]
async fn the_chart_installs_and_its_rbac_is_enough_to_reconcile() -> Result<()> {
    let (cluster, ns) = setup("operator-helm").await?;
    let chart = repo_dir().join("charts/iot-operator");
    let output = run(cluster.helm().args([
        "install",
        "iot",
        &chart.to_string_lossy(),
        "--namespace",
        ns.name(),
        "--set",
        &format!("watchNamespace={}", ns.name()),
        "--wait",
        "--timeout",
        "120s",
    ]))
    .await?;
    ensure!(
        output.contains("Next steps"),
        "NOTES.txt is shown:\n{output}"
    );

    // Namespaced install: a Role (no ClusterRole) without wildcards.
    let roles: Api<Role> = Api::namespaced(cluster.client(), ns.name());
    let role = roles.get("iot-iot-operator").await?;
    for rule in role.rules.unwrap_or_default() {
        let all = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        ensure!(all.clone().all(|s| s != "*"), "wildcard in {rule:?}");
    }
    let deployment = Api::<Deployment>::namespaced(cluster.client(), ns.name())
        .get("iot-iot-operator")
        .await?;
    let pod = deployment.spec.template.spec.unwrap_or_default();
    let security = pod.containers[0]
        .security_context
        .clone()
        .unwrap_or_default();
    ensure!(
        security.read_only_root_filesystem == Some(true)
            && security.allow_privilege_escalation == Some(false)
    );

    // Run the operator as the chart's ServiceAccount: Lease, watches, applies, status, Events.
    let client = client_as(&cluster, ns.name(), "iot-iot-operator").await?;
    let (ctx, metrics, _registry) = context(client.clone(), None);
    let (stop, stop_rx) = watch::channel(false);
    let watched = ns.name().to_owned();
    let lease_ns = ns.name().to_owned();
    let replica = tokio::spawn(async move {
        leader::run_as_leader(
            client,
            &lease_ns,
            "iot-operator-leader",
            "e2e",
            &metrics,
            stop_rx,
            |trigger| controller::run(ctx, Some(watched), trigger),
        )
        .await
    });
    cluster.apply_yaml(Some(ns.name()), MINIMAL).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;
    let _ = stop.send(true);
    let ended = tokio::time::timeout(Duration::from_secs(30), replica)
        .await
        .context("the operator did not stop")???;
    ensure!(ended == Ended::Stopped);

    run(cluster
        .helm()
        .args(["uninstall", "iot", "--namespace", ns.name()]))
    .await?;
    Ok(())
}
