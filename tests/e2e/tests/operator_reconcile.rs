//! The operator against the real control plane: an IotMonitor converges to Ready on kwok
//! nodes, a no-op reconcile writes nothing, drift is repaired, unwanted children go, deletion
//! collects children but keeps the data, a paused monitor is left alone until it resumes, and a
//! restart mid-way converges.

use iot_e2e::operator_support;

use std::time::Duration;

use anyhow::{Result, ensure};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{default_timeout, wait_condition, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::wait::conditions;
use operator_support::{
    MINIMAL, Operator, Stack, condition, first_container_env, versions, wait_deleted, wait_env,
    wait_ready,
};

#[tokio::test]
async fn empty_spec_converges_to_ready_with_every_child() -> Result<()> {
    let (stack, monitor) = Stack::ready("operator-converges").await?;
    let monitor = &monitor;

    let status = monitor.status.clone().unwrap_or_default();
    ensure!(condition(monitor, "Degraded").map(|c| c.0) == Some("False".into()));
    ensure!(
        status.endpoints.grafana.as_deref()
            == Some(&*format!("http://lab-grafana.{}.svc:3000", stack.ns.name()))
    );
    ensure!(status.components.aqi_ingestor.map(|c| c.summary) == Some("1/1".into()));

    let deployments = stack.api::<Deployment>();
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
    let hpa = stack
        .api::<HorizontalPodAutoscaler>()
        .get("lab-coap-server")
        .await?;
    let behavior = hpa.spec.behavior.unwrap_or_default();
    let down = behavior.scale_down.unwrap_or_default();
    ensure!(down.stabilization_window_seconds == Some(900) && hpa.spec.max_replicas == 5);
    let pvc = stack
        .api::<PersistentVolumeClaim>()
        .get("lab-influxdb-data")
        .await?;
    ensure!(
        pvc.metadata.owner_references.is_none(),
        "the data volume outlives the monitor by default"
    );
    let datasources = stack
        .api::<ConfigMap>()
        .get("lab-grafana-datasources")
        .await?;
    let text = datasources
        .data
        .unwrap_or_default()
        .remove("datasources.yaml")
        .unwrap_or_default();
    ensure!(text.contains("$INFLUX_READ_PASSWORD"), "{text}");
    let secret = stack.api::<Secret>().get("lab-credentials").await?;
    let data = secret.data.unwrap_or_default();
    let reader_password = String::from_utf8_lossy(&data["influxdb-reader-password"].0).into_owned();
    ensure!(
        !text.contains(&reader_password),
        "no password in any ConfigMap"
    );
    stack.stop().await
}

#[tokio::test]
async fn the_examples_converge_and_an_update_is_applied() -> Result<()> {
    let example = |file: &str| {
        std::fs::read_to_string(iot_testkit::cluster::repo_dir().join("examples").join(file))
    };
    let stack = Stack::start("operator-examples", &example("iotmonitor-minimal.yaml")?).await?;
    wait_ready(&stack.monitors, "lab").await?;

    // The quick-start example is the same monitor with more fields set: an update.
    stack
        .cluster
        .apply_yaml(Some(stack.ns.name()), &example("iotmonitor.yaml")?)
        .await?;
    let monitor = wait_ready(&stack.monitors, "lab").await?;
    let endpoints = monitor.status.unwrap_or_default().endpoints;
    ensure!(
        endpoints.grafana.as_deref() == Some("http://<node>:30300"),
        "{endpoints:?}"
    );
    ensure!(
        endpoints.coap.as_deref() == Some("coaps://<node>:30684"),
        "{endpoints:?}"
    );
    let sim = stack.api::<Deployment>().get("lab-sensor-sim").await?;
    let places = first_container_env(&sim, "SIM_PLACES");
    ensure!(
        places.as_deref() == Some("kitchen,bedroom,office"),
        "{places:?}"
    );
    let hpa = stack
        .api::<HorizontalPodAutoscaler>()
        .get("lab-grafana")
        .await?;
    ensure!(hpa.spec.max_replicas == 3);
    stack.stop().await
}

/// Waits until the operator has written nothing for three seconds in a row (the kwok-driven
/// status updates of the children have settled into the monitor's status).
async fn wait_quiet(operator: &Operator) -> Result<()> {
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
    Ok(())
}

#[tokio::test]
async fn a_noop_reconcile_writes_nothing() -> Result<()> {
    let (stack, _) = Stack::ready("operator-noop").await?;
    wait_quiet(&stack.operator).await?;
    let writes_before = stack.operator.writes();
    let reconciles_before = stack.operator.reconciles();

    // A change to a child wakes its owner (the monitor's own metadata does not: only its
    // generation does); an annotation changes nothing the operator wants, so the reconcile
    // reads the child once, finds it as wanted, and writes nothing.
    let poke = serde_json::json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    stack
        .api::<Service>()
        .patch("lab-grafana", &PatchParams::default(), &Patch::Merge(&poke))
        .await?;
    let before = versions(&stack.cluster, stack.ns.name()).await?;
    wait_for("a reconcile after the poke", default_timeout(), || async {
        let n = stack.operator.reconciles();
        if n > reconciles_before {
            Ok(())
        } else {
            Err(format!("{n} reconciles"))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let after = versions(&stack.cluster, stack.ns.name()).await?;
    ensure!(
        before == after,
        "children changed on a no-op reconcile:\nbefore {before:?}\nafter  {after:?}"
    );
    let writes = stack.operator.writes() - writes_before;
    ensure!(writes == 0, "the operator wrote {writes} times");
    stack.stop().await
}

#[tokio::test]
async fn deleted_and_edited_children_are_repaired() -> Result<()> {
    let (stack, _) = Stack::ready("operator-drift").await?;

    let services = stack.api::<Service>();
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

    let deployments = stack.api::<Deployment>();
    let edit = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "coap-server", "env": [{"name": "BATCH_SIZE", "value": "7"}]}]}}}});
    deployments
        .patch(
            "lab-coap-server",
            &PatchParams::default(),
            &Patch::Strategic(&edit),
        )
        .await?;
    wait_env(&deployments, "lab-coap-server", "BATCH_SIZE", "1000").await?;
    stack.stop().await
}

#[tokio::test]
async fn children_the_spec_no_longer_wants_are_deleted() -> Result<()> {
    let (stack, _) = Stack::ready("operator-prune").await?;

    let change = serde_json::json!({"spec": {"simulator": {"enabled": false}, "autoscaling": {"enabled": false}}});
    stack
        .monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&change))
        .await?;
    let deployments = stack.api::<Deployment>();
    wait_deleted(&deployments, "lab-sensor-sim").await?;
    wait_deleted(&stack.api::<HorizontalPodAutoscaler>(), "lab-grafana").await?;
    let monitor = wait_ready(&stack.monitors, "lab").await?;
    let sim = monitor
        .status
        .and_then(|s| s.components.simulator)
        .map(|c| c.summary);
    ensure!(sim.as_deref() == Some("Disabled"), "{sim:?}");
    // Without autoscaling the operator owns the replica count again.
    ensure!(deployments.get("lab-grafana").await?.spec.replicas == Some(1));
    stack.stop().await
}

#[tokio::test]
async fn deleting_the_monitor_collects_children_but_keeps_the_data() -> Result<()> {
    let (stack, monitor) = Stack::ready("operator-delete").await?;
    let uid = monitor.metadata.uid.unwrap_or_default();
    let secrets = stack.api::<Secret>();
    let admin_password = || async {
        let data = secrets
            .get("lab-credentials")
            .await?
            .data
            .unwrap_or_default();
        anyhow::Ok(data["influxdb-admin-password"].clone())
    };
    let password = admin_password().await?;

    stack
        .monitors
        .delete("lab", &DeleteParams::default())
        .await?;
    wait_condition(
        stack.monitors.clone(),
        "lab",
        conditions::is_deleted(&uid),
        default_timeout(),
    )
    .await?;
    wait_deleted(&stack.api::<StatefulSet>(), "lab-influxdb").await?;
    let deployments = stack.api::<Deployment>();
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
    ensure!(
        stack
            .api::<PersistentVolumeClaim>()
            .get_opt("lab-influxdb-data")
            .await?
            .is_some(),
        "the PVC is kept"
    );

    // Re-creating the monitor finds the same credentials, so the old data stays readable.
    stack
        .cluster
        .apply_yaml(Some(stack.ns.name()), MINIMAL)
        .await?;
    wait_ready(&stack.monitors, "lab").await?;
    ensure!(
        admin_password().await? == password,
        "credentials were regenerated"
    );
    stack.stop().await
}

/// Waits until the monitor's status describes its current generation and says it is paused.
async fn wait_paused(monitors: &Api<IotMonitor>) -> Result<()> {
    wait_for("lab to report Paused", default_timeout(), || async {
        let m = monitors.get("lab").await.map_err(|e| e.to_string())?;
        let observed = m.status.as_ref().and_then(|s| s.observed_generation);
        match condition(&m, "Progressing") {
            Some((_, reason, _)) if reason == "Paused" && observed == m.metadata.generation => {
                Ok(())
            }
            other => Err(format!(
                "Progressing={other:?}, observedGeneration={observed:?}"
            )),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_paused_monitor_is_left_alone_and_resumes_after() -> Result<()> {
    let (stack, _) = Stack::ready("operator-paused").await?;
    let pause = |paused: bool| serde_json::json!({"spec": {"paused": paused}});
    stack
        .monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&pause(true)))
        .await?;
    wait_paused(&stack.monitors).await?;
    wait_quiet(&stack.operator).await?;
    let before = versions(&stack.cluster, stack.ns.name()).await?;
    let writes_before = stack.operator.writes_but_status();

    // While paused, neither a spec change nor a deleted child is acted on.
    let change = serde_json::json!({"spec": {"coap": {"batch": {"size": 42}}}});
    stack
        .monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&change))
        .await?;
    let services = stack.api::<Service>();
    services
        .delete("lab-grafana", &DeleteParams::default())
        .await?;
    wait_paused(&stack.monitors).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut after = versions(&stack.cluster, stack.ns.name()).await?;
    let mut expected = before.clone();
    expected.remove("Service/lab-grafana");
    after.remove("Service/lab-grafana");
    ensure!(
        services.get_opt("lab-grafana").await?.is_none(),
        "a deleted child was re-created while paused"
    );
    ensure!(
        expected == after,
        "children changed while paused:\nbefore {expected:?}\nafter  {after:?}"
    );
    let writes = stack.operator.writes_but_status() - writes_before;
    ensure!(
        writes == 0,
        "the operator wrote {writes} times while paused"
    );

    // Resumed: the change is applied and the deleted child is back.
    stack
        .monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&pause(false)))
        .await?;
    let deployments = stack.api::<Deployment>();
    wait_env(&deployments, "lab-coap-server", "BATCH_SIZE", "42").await?;
    wait_ready(&stack.monitors, "lab").await?;
    ensure!(
        services.get_opt("lab-grafana").await?.is_some(),
        "the deleted child is back"
    );
    stack.stop().await
}

#[tokio::test]
async fn an_operator_restarted_midway_converges() -> Result<()> {
    let Stack {
        cluster,
        ns,
        operator: first,
        monitors,
    } = Stack::start("operator-restart", MINIMAL).await?;
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
    wait_ready(&monitors, "lab").await?;
    second.stop().await
}
