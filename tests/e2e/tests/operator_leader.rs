//! Two operator replicas never act at once: only the holder of the Lease runs the controller,
//! and when it stops the other takes over and keeps reconciling.

use iot_e2e::operator_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use iot_operator::controller::{self, WatchScope};
use iot_operator::crd::IotMonitor;
use iot_operator::leader::{self, Ended};
use iot_testkit::cluster::{Cluster, default_timeout, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use operator_support::{MINIMAL, context, setup, wait_env, wait_ready};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Replicas currently inside the controller, and the most ever seen at once.
#[derive(Default)]
struct Acting {
    now: AtomicUsize,
    max: AtomicUsize,
    by: std::sync::Mutex<Vec<&'static str>>,
}

struct Replica {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<Ended, kube_lease_manager::LeaseManagerError>>,
}

fn replica(
    cluster: &Cluster,
    namespace: &str,
    identity: &'static str,
    acting: Arc<Acting>,
) -> Replica {
    let client = cluster.client();
    let namespace = namespace.to_owned();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let (ctx, metrics, _registry) = context(client.clone(), Some(identity));
        let ns = namespace.clone();
        leader::run_as_leader(
            client,
            &namespace,
            "iot-operator-e2e",
            identity,
            &metrics,
            stop_rx,
            |trigger| async move {
                let n = acting.now.fetch_add(1, Ordering::SeqCst) + 1;
                acting.max.fetch_max(n, Ordering::SeqCst);
                if let Ok(mut by) = acting.by.lock() {
                    by.push(identity);
                }
                controller::run(ctx, WatchScope::Namespace(ns), trigger).await;
                acting.now.fetch_sub(1, Ordering::SeqCst);
            },
        )
        .await
    });
    Replica { stop, task }
}

#[tokio::test]
async fn two_replicas_never_both_act_and_the_second_takes_over() -> Result<()> {
    let (cluster, ns) = setup("operator-leader").await?;
    let acting = Arc::new(Acting::default());

    let a = replica(&cluster, ns.name(), "replica-a", acting.clone());
    wait_for("replica-a to lead", default_timeout(), || async {
        match acting.now.load(Ordering::SeqCst) {
            1 => Ok(()),
            n => Err(format!("{n} acting")),
        }
    })
    .await?;
    let b = replica(&cluster, ns.name(), "replica-b", acting.clone());

    cluster.apply_yaml(Some(ns.name()), MINIMAL).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        acting.max.load(Ordering::SeqCst) == 1,
        "both replicas acted at once"
    );

    // The leader stops (a rollout, a node drain): it releases the Lease and B takes over.
    let _ = a.stop.send(true);
    let ended = tokio::time::timeout(Duration::from_secs(30), a.task)
        .await
        .context("replica-a did not stop")???;
    ensure!(ended == Ended::Stopped);
    wait_for("replica-b to lead", default_timeout(), || async {
        let by = acting.by.lock().map(|b| b.clone()).unwrap_or_default();
        if by == ["replica-a", "replica-b"] {
            Ok(())
        } else {
            Err(format!("leaders so far: {by:?}"))
        }
    })
    .await?;

    // B reconciles: a spec change is applied.
    let change = serde_json::json!({"spec": {"coap": {"batch": {"size": 42}}}});
    monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&change))
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), ns.name());
    wait_env(&deployments, "lab-coap-server", "BATCH_SIZE", "42").await?;
    ensure!(
        acting.max.load(Ordering::SeqCst) == 1,
        "both replicas acted at once"
    );

    let _ = b.stop.send(true);
    tokio::time::timeout(Duration::from_secs(30), b.task)
        .await
        .context("replica-b did not stop")???;
    Ok(())
}
