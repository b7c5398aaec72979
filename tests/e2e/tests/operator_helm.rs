//! The Helm chart installs, and the RBAC it grants is enough: the operator, running with the
//! chart's ServiceAccount token, takes the Lease and reconciles an IotMonitor to Ready. Both
//! installs: namespaced (`watchNamespace` set), and the default, cluster-wide one, where the
//! chart hands the operator `WATCH_NAMESPACE=""` and the real binary must watch every namespace.

use iot_e2e::operator_support;

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use iot_operator::controller::{self, WatchScope};
use iot_operator::crd::IotMonitor;
use iot_operator::leader::{self, Ended};
use iot_testkit::bins::workspace_bin;
use iot_testkit::cluster::{Cluster, repo_dir, run};
use iot_testkit::ports::free_port;
use iot_testkit::process::Process;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use operator_support::{MINIMAL, context, setup, wait_ready};
use tokio::sync::watch;

/// The tests of this file install the chart one at a time: the cluster-wide operator of the
/// default install would otherwise also reconcile the other test's monitor.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's kubeconfig, authenticating as `system:serviceaccount:<ns>:<account>`.
async fn kubeconfig_as(cluster: &Cluster, ns: &str, account: &str) -> Result<String> {
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
    Ok(serde_yaml::to_string(&kubeconfig)?)
}

/// A client that authenticates as `system:serviceaccount:<ns>:<account>`.
async fn client_as(cluster: &Cluster, ns: &str, account: &str) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::from_yaml(&kubeconfig_as(cluster, ns, account).await?)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// `helm install <release> charts/iot-operator` into `ns`, with `extra` arguments.
async fn install(cluster: &Cluster, release: &str, ns: &str, extra: &[&str]) -> Result<String> {
    let chart = repo_dir().join("charts/iot-operator");
    let chart = chart.to_string_lossy();
    let mut args = vec!["install", release, &chart, "--namespace", ns];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--wait", "--timeout", "120s"]);
    Ok(run(cluster.helm().args(args)).await?)
}

/// RBAC the chart grants: exactly the verbs the controller uses, never a wildcard.
fn ensure_no_wildcard(rules: Vec<PolicyRule>) -> Result<()> {
    ensure!(!rules.is_empty(), "no rules");
    for rule in rules {
        let all = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        ensure!(all.clone().all(|s| s != "*"), "wildcard in {rule:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_chart_installs_and_its_rbac_is_enough_to_reconcile() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let (cluster, ns) = setup("operator-helm").await?;
    let output = install(
        &cluster,
        "iot",
        ns.name(),
        &["--set", &format!("watchNamespace={}", ns.name())],
    )
    .await?;
    ensure!(
        output.contains("Next steps"),
        "NOTES.txt is shown:\n{output}"
    );

    // Namespaced install: a Role (no ClusterRole) without wildcards.
    let roles: Api<Role> = Api::namespaced(cluster.client(), ns.name());
    ensure_no_wildcard(
        roles
            .get("iot-iot-operator")
            .await?
            .rules
            .unwrap_or_default(),
    )?;
    let cluster_roles: Api<ClusterRole> = Api::all(cluster.client());
    ensure!(
        cluster_roles.get_opt("iot-iot-operator").await?.is_none(),
        "a namespaced install grants no ClusterRole"
    );
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
            |trigger| controller::run(ctx, WatchScope::Namespace(watched), trigger),
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

#[tokio::test]
async fn the_default_install_watches_every_namespace() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let (cluster, ns) = setup("operator-helm-default").await?;
    // The release names cluster-wide objects (ClusterRole, ClusterRoleBinding): one per run.
    let release = ns.name();
    let full_name = format!("{release}-iot-operator");
    install(&cluster, release, ns.name(), &[]).await?;

    // Cluster-wide: a ClusterRole without wildcards, and the empty WATCH_NAMESPACE.
    let cluster_roles: Api<ClusterRole> = Api::all(cluster.client());
    ensure_no_wildcard(
        cluster_roles
            .get(&full_name)
            .await?
            .rules
            .unwrap_or_default(),
    )?;
    let deployment = Api::<Deployment>::namespaced(cluster.client(), ns.name())
        .get(&full_name)
        .await?;
    let container = deployment
        .spec
        .template
        .spec
        .and_then(|p| p.containers.into_iter().next())
        .context("the chart's Deployment has a container")?;
    let mut env: Vec<(String, String)> = container
        .env
        .unwrap_or_default()
        .into_iter()
        // An empty value comes back from the API server as no value at all.
        .filter(|e| e.value_from.is_none())
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    ensure!(
        env.contains(&("WATCH_NAMESPACE".into(), String::new())),
        "the default install sets WATCH_NAMESPACE to \"\": {env:?}"
    );

    // The real binary, with the chart's environment and its ServiceAccount's token. On this
    // machine it listens on loopback, and the pod's own name and namespace are filled in.
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubeconfig_as(&cluster, ns.name(), &full_name).await?,
    )?;
    env.retain(|(name, _)| name != "HTTP_ADDR");
    env.extend([
        ("HTTP_ADDR".into(), format!("127.0.0.1:{}", free_port())),
        ("POD_NAME".into(), "e2e-default-install".into()),
        ("POD_NAMESPACE".into(), ns.name().to_owned()),
        ("KUBECONFIG".into(), kubeconfig.display().to_string()),
    ]);
    let mut operator = Process::spawn(
        "iot-operator",
        std::process::Command::new(workspace_bin("iot-operator"))
            .arg("run")
            .env_clear()
            .envs(env),
    );

    // A monitor in a namespace the release knows nothing of is reconciled.
    let elsewhere = cluster.namespace("operator-helm-elsewhere").await?;
    cluster.apply_yaml(Some(elsewhere.name()), MINIMAL).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), elsewhere.name());
    wait_ready(&monitors, "lab").await?;
    ensure!(operator.stop().await.success(), "a graceful stop");
    let logged = operator.log();
    ensure!(
        logged.contains(r#""watching":"all namespaces""#),
        "the operator says it watches every namespace:\n{logged}"
    );

    run(cluster
        .helm()
        .args(["uninstall", release, "--namespace", ns.name()]))
    .await?;
    Ok(())
}
