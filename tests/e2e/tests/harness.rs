//! The local control plane does what the operator's tests will rely on: kwok nodes run pods, the
//! controller manager collects garbage and binds volumes, the API server enforces CEL rules and Pod
//! Security, and helm installs charts. Needs `make cluster-up` (see `iot_testkit::cluster`).

use anyhow::{Context, Result, bail, ensure};
use iot_testkit::cluster::{
    Cluster, ClusterError, default_timeout, repo_dir, run, wait_condition, wait_for,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::conditions;

fn is_api_error(error: &ClusterError, code: u16) -> Option<&str> {
    match error {
        ClusterError::Kube(kube::Error::Api(status)) if status.code == code => {
            Some(status.message.as_str())
        }
        _ => None,
    }
}

#[tokio::test]
async fn deployment_becomes_available_on_kwok_nodes() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("deployment-becomes-available").await?;
    cluster
        .apply_yaml(
            Some(ns.name()),
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: example.invalid/web:1}]
"#,
        )
        .await?;

    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    wait_for(
        "Deployment web to be Available with 2 ready replicas",
        default_timeout(),
        || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let status = d.status.unwrap_or_default();
            let available = status.conditions.unwrap_or_default().iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            });
            match (available, status.ready_replicas) {
                (true, Some(2)) => Ok(()),
                (a, r) => Err(format!("Available={a}, readyReplicas={r:?}")),
            }
        },
    )
    .await?;

    let pods = Api::<Pod>::namespaced(cluster.client(), ns.name())
        .list(&ListParams::default().labels("app=web"))
        .await?;
    ensure!(
        pods.items.len() == 2,
        "expected 2 pods, found {}",
        pods.items.len()
    );
    for pod in &pods.items {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        ensure!(
            node.starts_with("kwok-node-"),
            "pod scheduled to {node:?}, not a kwok node"
        );
        ensure!(
            status.phase.as_deref() == Some("Running"),
            "pod phase {:?}",
            status.phase
        );
        ensure!(status.pod_ip.is_some(), "kwok gave the pod no IP");
    }
    Ok(())
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependent() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("garbage-collection").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(cluster.client(), ns.name());
    let owner = config_maps
        .create(&PostParams::default(), &config_map("owner", None))
        .await?;
    let owner_uid = owner.metadata.uid.clone().context("owner has no uid")?;
    let dependent = config_maps
        .create(
            &PostParams::default(),
            &config_map("dependent", Some(("owner", &owner_uid))),
        )
        .await?;
    config_maps
        .create(&PostParams::default(), &config_map("bystander", None))
        .await?;
    let dependent_uid = dependent.metadata.uid.context("dependent has no uid")?;

    config_maps
        .delete("owner", &DeleteParams::background())
        .await?;
    wait_condition(
        config_maps.clone(),
        "dependent",
        conditions::is_deleted(&dependent_uid),
        default_timeout(),
    )
    .await?;
    ensure!(
        config_maps.get_opt("bystander").await?.is_some(),
        "the garbage collector also removed a ConfigMap without an owner"
    );
    Ok(())
}

fn config_map(name: &str, owner: Option<(&str, &str)>) -> ConfigMap {
    let mut value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"role": name},
    });
    if let Some((owner_name, uid)) = owner {
        value["metadata"]["ownerReferences"] = serde_json::json!([
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner_name, "uid": uid}
        ]);
    }
    serde_json::from_value(value).expect("a valid ConfigMap")
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.harness.iot-operator.dev}
spec:
  group: harness.iot-operator.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [minReplicas, maxReplicas]
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: minReplicas must not exceed maxReplicas
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
"#;

fn widget(name: &str, min: u32, max: u32) -> String {
    format!(
        "apiVersion: harness.iot-operator.dev/v1\nkind: Widget\nmetadata: {{name: {name}}}\n\
         spec: {{minReplicas: {min}, maxReplicas: {max}}}\n"
    )
}

#[tokio::test]
async fn a_crd_cel_rule_rejects_a_bad_object() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("crd-cel-rule").await?;
    // CRDs are cluster-scoped and shared by every test: applied idempotently, never deleted.
    cluster.apply_yaml(None, WIDGET_CRD).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    wait_condition(
        crds,
        "widgets.harness.iot-operator.dev",
        conditions::is_crd_established(),
        default_timeout(),
    )
    .await?;

    // Discovery can lag behind Established for a moment, so the good object is retried.
    wait_for(
        "a valid Widget to be accepted",
        default_timeout(),
        || async {
            cluster
                .apply_yaml(Some(ns.name()), &widget("good", 1, 3))
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await?;

    match cluster
        .apply_yaml(Some(ns.name()), &widget("bad", 3, 1))
        .await
    {
        Ok(_) => bail!("the API server accepted minReplicas 3 > maxReplicas 1"),
        Err(e) => match is_api_error(&e, 422) {
            Some(message) => ensure!(
                message.contains("minReplicas must not exceed maxReplicas"),
                "rejected for another reason: {message}"
            ),
            None => bail!("expected 422 Invalid from the CEL rule, got: {e}"),
        },
    }
    Ok(())
}

#[tokio::test]
async fn helm_installs_a_tiny_chart() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("helm-install").await?;
    let chart = repo_dir().join("tests/e2e/fixtures/tiny-chart");
    let chart = chart.to_str().context("chart path is not UTF-8")?;

    // Offline, helm assumes the Kubernetes version build.sh stamped in; the chart's kubeVersion
    // constraint fails against helm's unstamped default (v1.20).
    run(cluster.helm().args(["lint", chart])).await?;
    let rendered = run(cluster.helm().args(["template", "tiny", chart])).await?;
    ensure!(
        rendered.contains("name: tiny-greeting"),
        "helm template rendered:\n{rendered}"
    );
    run(cluster.helm().args([
        "install",
        "tiny",
        chart,
        "--namespace",
        ns.name(),
        "--set",
        "greeting=hi from helm",
        "--wait",
        "--timeout",
        &format!("{}s", default_timeout().as_secs()),
    ]))
    .await?;

    let data = Api::<ConfigMap>::namespaced(cluster.client(), ns.name())
        .get("tiny-greeting")
        .await?
        .data
        .unwrap_or_default();
    ensure!(
        data.get("greeting").map(String::as_str) == Some("hi from helm"),
        "the chart's ConfigMap has greeting {:?}",
        data.get("greeting")
    );
    let status = run(cluster
        .helm()
        .args(["status", "tiny", "--namespace", ns.name()]))
    .await?;
    ensure!(
        status.contains("STATUS: deployed"),
        "helm status says:\n{status}"
    );
    Ok(())
}

#[tokio::test]
async fn a_restricted_namespace_rejects_a_privileged_pod() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster
        .namespace_with_labels(
            "pod-security-restricted",
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await?;

    let privileged = r#"
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  containers:
  - name: c
    image: example.invalid/app:1
    securityContext: {privileged: true}
"#;
    match cluster.apply_yaml(Some(ns.name()), privileged).await {
        Ok(_) => bail!("a privileged pod was admitted to a restricted namespace"),
        Err(e) => match is_api_error(&e, 403) {
            Some(message) => ensure!(
                message.contains("violates PodSecurity \"restricted"),
                "forbidden for another reason: {message}"
            ),
            None => bail!("expected 403 Forbidden from Pod Security admission, got: {e}"),
        },
    }

    // The same namespace admits a pod that meets the restricted profile, so the rejection above was
    // about privileges, not about pods in general.
    let compliant = r#"
apiVersion: v1
kind: Pod
metadata: {name: compliant}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: c
    image: example.invalid/app:1
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
"#;
    cluster.apply_yaml(Some(ns.name()), compliant).await?;
    Ok(())
}

#[tokio::test]
async fn a_statefulset_with_a_volume_claim_template_becomes_ready() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("statefulset-volumes").await?;
    cluster
        .apply_yaml(
            Some(ns.name()),
            r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 8086}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: example.invalid/db:1
        volumeMounts: [{name: data, mountPath: /var/lib/db}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#,
        )
        .await?;

    let sets: Api<StatefulSet> = Api::namespaced(cluster.client(), ns.name());
    wait_for(
        "StatefulSet db to have 2 ready replicas",
        default_timeout(),
        || async {
            let s = sets.get("db").await.map_err(|e| e.to_string())?;
            match s.status.and_then(|s| s.ready_replicas) {
                Some(2) => Ok(()),
                other => Err(format!("readyReplicas={other:?}")),
            }
        },
    )
    .await?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), ns.name());
    let volumes: Api<PersistentVolume> = Api::all(cluster.client());
    for name in ["data-db-0", "data-db-1"] {
        let claim = claims.get(name).await?;
        let phase = claim.status.and_then(|s| s.phase);
        ensure!(phase.as_deref() == Some("Bound"), "PVC {name} is {phase:?}");
        let spec = claim.spec.unwrap_or_default();
        ensure!(
            spec.storage_class_name.as_deref() == Some("standard"),
            "PVC {name} did not get the default StorageClass: {:?}",
            spec.storage_class_name
        );
        let volume = spec.volume_name.context("bound PVC without a volume")?;
        let pv = volumes.get(&volume).await?;
        let claim_ref = pv.spec.and_then(|s| s.claim_ref).and_then(|r| r.name);
        ensure!(
            claim_ref.as_deref() == Some(name),
            "PV {volume} claims {claim_ref:?}"
        );
    }
    Ok(())
}
