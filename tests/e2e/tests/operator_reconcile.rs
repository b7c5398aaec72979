//! The operator against the real control plane: an IotMonitor converges to Ready on kwok
//! nodes, a no-op reconcile writes nothing, drift is repaired, unwanted children go, deletion
//! collects children but keeps the data, and a restart mid-way converges.

mod operator_support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{Cluster, default_timeout, wait_condition, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::wait::conditions;
use operator_support::{Operator, condition, first_container_env, install_crd, wait_ready};

const MINIMAL: &str =
    "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {name: lab}\nspec: {}\n";

async fn setup(test: &str) -> Result<(Cluster, iot_testkit::cluster::TestNamespace)> {
    let cluster = Cluster::connect().await?;
    install_crd(&cluster).await?;
    let ns = cluster.namespace(test).await?;
    Ok((cluster, ns))
}

/// A namespace with a running operator and a Ready `spec: {}` IotMonitor `lab` in it.
struct Stack {
    cluster: Cluster,
    ns: iot_testkit::cluster::TestNamespace,
    operator: Operator,
    monitors: Api<IotMonitor>,
    monitor: IotMonitor,
}

async fn ready_stack(test: &str) -> Result<Stack> {
    let (cluster, ns) = setup(test).await?;
    let operator = Operator::start(cluster.client(), ns.name());
    cluster.apply_yaml(Some(ns.name()), MINIMAL).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    let monitor = wait_ready(&monitors, "lab").await?;
    Ok(Stack {
        cluster,
        ns,
        operator,
        monitors,
        monitor,
    })
}

/// name → resourceVersion of every child kind the operator writes, plus the monitor's status.
async fn versions(cluster: &Cluster, ns: &str) -> Result<BTreeMap<String, String>> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=iot-operator");
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($kind:ty) => {
            for o in Api::<$kind>::namespaced(cluster.client(), ns)
                .list(&lp)
                .await?
            {
                let key = format!(
                    "{}/{}",
                    stringify!($kind),
                    o.metadata.name.unwrap_or_default()
                );
                out.insert(key, o.metadata.resource_version.unwrap_or_default());
            }
        };
    }
    collect!(Deployment);
    collect!(StatefulSet);
    collect!(Service);
    collect!(ConfigMap);
    collect!(Secret);
    collect!(PersistentVolumeClaim);
    collect!(HorizontalPodAutoscaler);
    collect!(NetworkPolicy);
    Ok(out)
}

#[tokio::test]
async fn empty_spec_converges_to_ready_with_every_child() -> Result<()> {
    let Stack {
        cluster,
        ns,
        operator,
        monitors: _,
        monitor,
    } = ready_stack("operator-converges").await?;

    let status = monitor.status.clone().unwrap_or_default();
    ensure!(condition(&monitor, "Degraded").map(|c| c.0) == Some("False".into()));
    ensure!(
        status.endpoints.grafana.as_deref()
            == Some(&*format!("http://lab-grafana.{}.svc:3000", ns.name()))
    );
    ensure!(status.components.aqi_ingestor.map(|c| c.summary) == Some("1/1".into()));

    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    for name in ["lab-grafana", "lab-coap-server"] {
        let d = deployments.get(name).await?;
        let managers: Vec<_> = d
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.manager.as_deref() == Some("iot-operator"))
            .filter_map(|m| m.fields_v1.map(|f| f.0.to_string()))
            .collect();
        ensure!(!managers.is_empty(), "{name} is applied by iot-operator");
        ensure!(
            managers.iter().all(|f| !f.contains("\"f:replicas\"")),
            "{name}: the operator must not own spec.replicas of an autoscaled Deployment: {managers:?}"
        );
    }
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(cluster.client(), ns.name())
        .get("lab-coap-server")
        .await?;
    let behavior = hpa.spec.behavior.unwrap_or_default();
    let down = behavior.scale_down.unwrap_or_default();
    ensure!(down.stabilization_window_seconds == Some(900) && hpa.spec.max_replicas == 5);
    let pvc = Api::<PersistentVolumeClaim>::namespaced(cluster.client(), ns.name())
        .get("lab-influxdb-data")
        .await?;
    ensure!(
        pvc.metadata.owner_references.is_none(),
        "the data volume outlives the monitor by default"
    );
    let datasources = Api::<ConfigMap>::namespaced(cluster.client(), ns.name())
        .get("lab-grafana-datasources")
        .await?;
    let text = datasources
        .data
        .unwrap_or_default()
        .remove("datasources.yaml")
        .unwrap_or_default();
    ensure!(text.contains("$INFLUX_READ_PASSWORD"), "{text}");
    let secret = Api::<Secret>::namespaced(cluster.client(), ns.name())
        .get("lab-credentials")
        .await?;
    let data = secret.data.unwrap_or_default();
    let reader_password = String::from_utf8_lossy(&data["influxdb-reader-password"].0).into_owned();
    ensure!(
        !text.contains(&reader_password),
        "no password in any ConfigMap"
    );
    operator.stop().await
}

#[tokio::test]
async fn the_examples_converge_and_an_update_is_applied() -> Result<()> {
    let (cluster, ns) = setup("operator-examples").await?;
    let operator = Operator::start(cluster.client(), ns.name());
    let example = |file: &str| {
        std::fs::read_to_string(iot_testkit::cluster::repo_dir().join("examples").join(file))
    };
    cluster
        .apply_yaml(Some(ns.name()), &example("iotmonitor-minimal.yaml")?)
        .await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;

    // The quick-start example is the same monitor with more fields set: an update.
    cluster
        .apply_yaml(Some(ns.name()), &example("iotmonitor.yaml")?)
        .await?;
    let monitor = wait_ready(&monitors, "lab").await?;
    let endpoints = monitor.status.unwrap_or_default().endpoints;
    ensure!(
        endpoints.grafana.as_deref() == Some("http://<node>:30300"),
        "{endpoints:?}"
    );
    ensure!(
        endpoints.coap.as_deref() == Some("coap://<node>:30683"),
        "{endpoints:?}"
    );
    let sim = Api::<Deployment>::namespaced(cluster.client(), ns.name())
        .get("lab-sensor-sim")
        .await?;
    let places = first_container_env(&sim, "SIM_PLACES");
    ensure!(
        places.as_deref() == Some("kitchen,bedroom,office"),
        "{places:?}"
    );
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(cluster.client(), ns.name())
        .get("lab-grafana")
        .await?;
    ensure!(hpa.spec.max_replicas == 3);
    operator.stop().await
}

#[tokio::test]
async fn a_noop_reconcile_writes_nothing() -> Result<()> {
    let Stack {
        cluster,
        ns,
        operator,
        monitors,
        monitor: _,
    } = ready_stack("operator-noop").await?;
    // Let the kwok-driven status updates of the children settle into the operator's status:
    // quiet means no write for three seconds in a row.
    let mut writes_before = operator.writes();
    wait_for("the operator to go quiet", default_timeout(), || {
        let now = operator.writes();
        let quiet = now == writes_before;
        writes_before = now;
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            if quiet {
                Ok(())
            } else {
                Err(format!("{now} writes so far, still writing"))
            }
        }
    })
    .await?;
    let writes_before = operator.writes();
    let before = versions(&cluster, ns.name()).await?;

    // Any change to the monitor triggers a reconcile; an annotation changes nothing it wants.
    let poke = serde_json::json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&poke))
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let after = versions(&cluster, ns.name()).await?;
    ensure!(
        before == after,
        "children changed on a no-op reconcile:\nbefore {before:?}\nafter  {after:?}"
    );
    ensure!(
        operator.writes() == writes_before,
        "the operator wrote {} times",
        operator.writes() - writes_before
    );
    operator.stop().await
}

#[tokio::test]
async fn deleted_and_edited_children_are_repaired() -> Result<()> {
    let Stack {
        cluster,
        ns,
        operator,
        monitors: _,
        monitor: _,
    } = ready_stack("operator-drift").await?;

    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let old_uid = services.get("lab-grafana").await?.metadata.uid;
    services
        .delete("lab-grafana", &DeleteParams::default())
        .await?;
    wait_for(
        "Service lab-grafana to come back",
        default_timeout(),
        || async {
            match services
                .get_opt("lab-grafana")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(s) if s.metadata.uid != old_uid => Ok(()),
                _ => Err("not re-created yet".to_string()),
            }
        },
    )
    .await?;

    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    let edit = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "coap-server", "env": [{"name": "BATCH_SIZE", "value": "7"}]}]}}}});
    deployments
        .patch(
            "lab-coap-server",
            &PatchParams::default(),
            &Patch::Strategic(&edit),
        )
        .await?;
    wait_for("BATCH_SIZE to be restored", default_timeout(), || async {
        let d = deployments
            .get("lab-coap-server")
            .await
            .map_err(|e| e.to_string())?;
        match first_container_env(&d, "BATCH_SIZE") {
            Some(v) if v == "1000" => Ok(()),
            other => Err(format!("BATCH_SIZE={other:?}")),
        }
    })
    .await?;
    operator.stop().await
}

#[tokio::test]
async fn children_the_spec_no_longer_wants_are_deleted() -> Result<()> {
    let Stack {
        cluster,
        ns,
        operator,
        monitors,
        monitor: _,
    } = ready_stack("operator-prune").await?;

    let change = serde_json::json!({"spec": {"simulator": {"enabled": false}, "autoscaling": {"enabled": false}}});
    monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&change))
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    wait_condition(
        deployments.clone(),
        "lab-sensor-sim",
        conditions::is_deleted(""),
        default_timeout(),
    )
    .await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(cluster.client(), ns.name());
    wait_condition(
        hpas,
        "lab-grafana",
        conditions::is_deleted(""),
        default_timeout(),
    )
    .await?;
    let monitor = wait_ready(&monitors, "lab").await?;
    let sim = monitor
        .status
        .and_then(|s| s.components.simulator)
        .map(|c| c.summary);
    ensure!(sim.as_deref() == Some("Disabled"), "{sim:?}");
    // Without autoscaling the operator owns the replica count again.
    ensure!(deployments.get("lab-grafana").await?.spec.replicas == Some(1));
    operator.stop().await
}

#[tokio::test]
async fn deleting_the_monitor_collects_children_but_keeps_the_data() -> Result<()> {
    let Stack {
        cluster,
        ns,
        operator,
        monitors,
        monitor,
    } = ready_stack("operator-delete").await?;
    let uid = monitor.metadata.uid.unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns.name());
    let password = secrets
        .get("lab-credentials")
        .await?
        .data
        .unwrap_or_default()["influxdb-admin-password"]
        .clone();

    monitors.delete("lab", &DeleteParams::default()).await?;
    wait_condition(
        monitors.clone(),
        "lab",
        conditions::is_deleted(&uid),
        default_timeout(),
    )
    .await?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(cluster.client(), ns.name());
    wait_condition(
        statefulsets,
        "lab-influxdb",
        conditions::is_deleted(""),
        default_timeout(),
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    wait_for(
        "the Deployments to be collected",
        default_timeout(),
        || async {
            let left = deployments
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} left"))
            }
        },
    )
    .await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), ns.name());
    ensure!(
        pvcs.get_opt("lab-influxdb-data").await?.is_some(),
        "the PVC is kept"
    );

    // Re-creating the monitor finds the same credentials, so the old data stays readable.
    cluster.apply_yaml(Some(ns.name()), MINIMAL).await?;
    wait_ready(&monitors, "lab").await?;
    let again = secrets
        .get("lab-credentials")
        .await?
        .data
        .unwrap_or_default()["influxdb-admin-password"]
        .clone();
    ensure!(again == password, "credentials were regenerated");
    operator.stop().await
}

#[tokio::test]
async fn an_operator_restarted_midway_converges() -> Result<()> {
    let (cluster, ns) = setup("operator-restart").await?;
    let first = Operator::start(cluster.client(), ns.name());
    cluster.apply_yaml(Some(ns.name()), MINIMAL).await?;
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns.name());
    // Stop as soon as the first child exists: the rest is half-done.
    wait_for("the first child", default_timeout(), || async {
        match secrets
            .get_opt("lab-credentials")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(_) => Ok(()),
            None => Err("no Secret yet".into()),
        }
    })
    .await?;
    first.stop().await?;
    let second = Operator::start(cluster.client(), ns.name());
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;
    second.stop().await
}
