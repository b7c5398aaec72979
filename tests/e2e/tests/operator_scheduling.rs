//! Per-component scheduling reaches the pods: with `grafana.nodeSelector` and
//! `coap.nodeSelector` naming two different nodes, the scheduler puts each component's pods on
//! its own node (this is how tests place Grafana on a kwok node beside real ones).

use iot_e2e::operator_support;

use anyhow::{Context as _, Result, ensure};
use iot_testkit::cluster::{default_timeout, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use operator_support::{Stack, wait_ready};

/// The hostnames of the kwok nodes, sorted.
async fn kwok_nodes(client: kube::Client) -> Result<Vec<String>> {
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default().labels("type=kwok"))
        .await?;
    let mut names: Vec<String> = nodes
        .items
        .into_iter()
        .filter_map(|n| n.metadata.labels?.remove("kubernetes.io/hostname"))
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn each_components_node_selector_places_its_pods() -> Result<()> {
    let cluster = iot_testkit::cluster::Cluster::connect().await?;
    let nodes = kwok_nodes(cluster.client()).await?;
    ensure!(nodes.len() >= 2, "two kwok nodes needed, found {nodes:?}");
    let (grafana_node, coap_node) = (&nodes[nodes.len() - 1], &nodes[0]);
    let monitor = format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: lab}}\nspec:\n  \
         grafana: {{nodeSelector: {{kubernetes.io/hostname: {grafana_node}}}}}\n  \
         coap: {{nodeSelector: {{kubernetes.io/hostname: {coap_node}}}}}\n"
    );
    let stack = Stack::start("operator-scheduling", &monitor).await?;
    wait_ready(&stack.monitors, "lab").await?;

    let pods = stack.api::<Pod>();
    for (component, node) in [("grafana", grafana_node), ("coap-server", coap_node)] {
        let selector = format!("app.kubernetes.io/name={component}");
        wait_for(
            &format!("{component}'s pods on {node}"),
            default_timeout(),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| e.to_string())?;
                let placed: Vec<_> = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                    .collect();
                if !placed.is_empty() && placed.iter().all(|n| n.as_ref() == Some(node)) {
                    Ok(())
                } else {
                    Err(format!("placed on {placed:?}"))
                }
            },
        )
        .await
        .with_context(|| format!("{component} with nodeSelector {node}"))?;
    }
    stack.stop().await
}
