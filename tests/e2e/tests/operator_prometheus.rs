//! The Prometheus path on the real control plane. Without the Prometheus operator's CRDs the
//! stack is Ready and has no metrics Service; once the CRDs (from the prometheus-operator
//! module, cached by tests/cluster/build.sh) are installed, the operator notices by itself and
//! creates the ServiceMonitor and PrometheusRule, which the API server accepts against the
//! CRDs' schemas; alerting off takes the PrometheusRule away; the CRDs removed, the stack
//! stays Ready. The chart's own ServiceMonitor and PrometheusRule are accepted too. The
//! PrometheusRule's expressions (and the chart's) parse with Prometheus' own parser
//! (`promql-check`, built by the same script).

use iot_e2e::operator_support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use iot_operator::controller::dereference::Dereferenced;
use iot_operator::controller::desired::prometheus::{
    prometheus_rule_resource, rule_expressions, service_monitor_resource,
};
use iot_operator::controller::validate::validate;
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{default_timeout, repo_dir, run, wait_for};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use operator_support::{Operator, setup, wait_ready};
use serde_json::json;

fn cache_bin() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    std::env::var_os("IOT_CACHE")
        .map_or_else(|| home.join(".cache/iot-operator"), PathBuf::from)
        .join("bin")
}

/// `PROMETHEUS_OPERATOR_VERSION` of tests/cluster/versions.env.
fn prometheus_operator_version() -> Result<String> {
    let env = std::fs::read_to_string(repo_dir().join("tests/cluster/versions.env"))?;
    env.lines()
        .find_map(|l| l.strip_prefix("PROMETHEUS_OPERATOR_VERSION="))
        .map(str::to_owned)
        .context("PROMETHEUS_OPERATOR_VERSION in versions.env")
}

/// Runs Prometheus' parser over `exprs`; returns its verdict line per expression.
fn promql_check(exprs: &[String]) -> Result<(bool, Vec<String>)> {
    let bin = cache_bin().join("promql-check");
    ensure!(
        bin.exists(),
        "{} missing: run tests/cluster/build.sh",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(exprs.join("\n").as_bytes())?;
    let out = child.wait_with_output()?;
    let lines = String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    Ok((out.status.success(), lines))
}

/// Every expression of the PrometheusRule the operator builds, and the chart's own.
#[test]
fn every_prometheus_rule_expression_parses_with_prometheus_own_parser() -> Result<()> {
    let mut monitor = IotMonitor::new("lab", serde_yaml::from_str("{}")?);
    monitor.metadata.namespace = Some("iot".into());
    monitor.metadata.uid = Some("uid".into());
    let refs = Dereferenced {
        prometheus_operator: true,
        ..Dereferenced::default()
    };
    let model = validate(&monitor, &refs)?;
    let mut exprs: Vec<String> = rule_expressions(&model)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    ensure!(
        exprs.len() == 2,
        "IngestFailing and AqiIngestorStale: {exprs:?}"
    );
    let chart =
        std::fs::read_to_string(repo_dir().join("charts/iot-operator/templates/monitoring.yaml"))?;
    for line in chart.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            exprs.push(expr.replace("{{ $name }}", "iot-operator"));
        }
    }
    ensure!(
        exprs.len() == 3,
        "the chart's OperatorReconcileErrors: {exprs:?}"
    );
    let (ok, verdicts) = promql_check(&exprs)?;
    ensure!(
        ok && verdicts.iter().all(|v| v.starts_with("ok\tvector")),
        "{verdicts:#?}"
    );
    // The parser does refuse: a broken expression fails.
    let (ok, verdicts) = promql_check(&["sum(rate(x[5m])".to_owned()])?;
    ensure!(!ok && verdicts[0].starts_with("error"), "{verdicts:?}");
    Ok(())
}

const MONITOR: &str = "apiVersion: iot.operator.dev/v1alpha1
kind: IotMonitor
metadata: {name: lab}
spec: {}
";

async fn established(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    wait_for(
        &format!("CRD {name} established"),
        default_timeout(),
        || async {
            let crd = crds.get(name).await.map_err(|e| e.to_string())?;
            let ok = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if ok { Ok(()) } else { Err("not yet".into()) }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn service_monitor_and_prometheus_rule_exist_only_with_their_crds() -> Result<()> {
    let (cluster, ns) = setup("prometheus-path").await?;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    const NAMES: [&str; 2] = [
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ];
    for name in NAMES {
        if crds.get_opt(name).await?.is_some() {
            bail!("CRD {name} is installed already: this test needs a cluster without it");
        }
    }
    let operator =
        Operator::start_with_prometheus(cluster.client(), ns.name(), Duration::from_secs(1));
    cluster.apply_yaml(Some(ns.name()), MONITOR).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());

    // Without the CRDs: Ready, and nothing of the Prometheus path.
    wait_ready(&monitors, "lab").await?;
    ensure!(services.get_opt("lab-metrics").await?.is_none());

    // The CRDs from the prometheus-operator module: the operator notices by itself.
    let file = cache_bin().join(format!(
        "prometheus-operator-{}-crds.yaml",
        prometheus_operator_version()?
    ));
    let yaml = std::fs::read_to_string(&file)
        .with_context(|| format!("{}: run tests/cluster/build.sh", file.display()))?;
    let result = async {
        cluster.apply_yaml(None, &yaml).await?;
        for name in NAMES {
            established(&crds, name).await?;
        }
        let monitors_api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client(), ns.name(), &service_monitor_resource());
        let rules_api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client(), ns.name(), &prometheus_rule_resource());
        let sm = wait_for("the ServiceMonitor", default_timeout(), || async {
            monitors_api
                .get_opt("lab-metrics")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_owned())
        })
        .await?;
        ensure!(
            sm.data["spec"]["endpoints"][0]["port"] == "metrics",
            "{sm:?}"
        );
        ensure!(services.get_opt("lab-metrics").await?.is_some());
        let rule = wait_for("the PrometheusRule", default_timeout(), || async {
            rules_api
                .get_opt("lab-alerts")
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "not yet".to_owned())
        })
        .await?;
        let alerts: Vec<&str> = rule.data["spec"]["groups"][0]["rules"]
            .as_array()
            .context("rules")?
            .iter()
            .filter_map(|r| r["alert"].as_str())
            .collect();
        ensure!(
            alerts == ["IngestFailing", "AqiIngestorStale"],
            "{alerts:?}"
        );
        wait_ready(&monitors, "lab").await?;

        // The chart's own ServiceMonitor and PrometheusRule, rendered as Helm renders them on a
        // cluster serving these kinds, are accepted by the API server too.
        let chart = repo_dir().join("charts/iot-operator");
        let rendered = run(cluster.helm().args([
            "template",
            "rel",
            &chart.to_string_lossy(),
            "--namespace",
            ns.name(),
            "--api-versions",
            "monitoring.coreos.com/v1/ServiceMonitor",
            "--show-only",
            "templates/monitoring.yaml",
        ]))
        .await?;
        let applied = cluster.apply_yaml(Some(ns.name()), &rendered).await?;
        let mut kinds: Vec<String> = applied
            .iter()
            .filter_map(|o| o.types.as_ref().map(|t| t.kind.clone()))
            .collect();
        kinds.sort();
        ensure!(kinds == ["PrometheusRule", "ServiceMonitor"], "{kinds:?}");

        // Alerting off: the PrometheusRule goes, the ServiceMonitor stays.
        monitors
            .patch(
                "lab",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"alerts": {"enabled": false}}})),
            )
            .await?;
        wait_for("the PrometheusRule deleted", default_timeout(), || async {
            match rules_api.get_opt("lab-alerts").await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        ensure!(monitors_api.get_opt("lab-metrics").await?.is_some());
        Ok::<(), anyhow::Error>(())
    }
    .await;
    // The CRDs go whatever happened, so the cluster is as the other tests expect it.
    for name in NAMES {
        let _ = crds.delete(name, &Default::default()).await;
    }
    result?;

    // Without the CRDs again: the metrics Service goes, the stack stays Ready.
    wait_for("the metrics Service deleted", default_timeout(), || async {
        match services.get_opt("lab-metrics").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    wait_ready(&monitors, "lab").await?;
    operator.stop().await
}
