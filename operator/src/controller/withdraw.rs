//! Consent withdrawn: when the owner of the external credentials Secret takes its opt-in off (or
//! pins it to another URL) after the stack was built on it, the workloads that read it go, so no
//! pod keeps sending its values. Which ones is a pure decision ([`readers`]); the deletion is a
//! thin layer. Once the Secret opts in again, the next reconcile builds them anew.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodSpec;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use super::apply::ApplyError;
use super::desired::labels::children_selector;
use crate::crd::IotMonitor;
use crate::metrics::Metrics;

/// The names of the Deployments among `deployments`, controlled by the monitor of `owner_uid`,
/// whose pods take anything from the Secret `secret` (an env var, `envFrom` or a volume).
pub(crate) fn readers(deployments: &[Deployment], secret: &str, owner_uid: &str) -> Vec<String> {
    deployments
        .iter()
        .filter(|d| {
            d.owner_references()
                .iter()
                .any(|o| o.uid == owner_uid && o.controller == Some(true))
        })
        .filter(|d| {
            d.spec
                .template
                .spec
                .as_ref()
                .is_some_and(|pod| reads(pod, secret))
        })
        .map(|d| d.name_any())
        .collect()
}

fn reads(pod: &PodSpec, secret: &str) -> bool {
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    let by_env = containers.clone().any(|c| {
        c.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name == secret)
        }) || c
            .env_from
            .iter()
            .flatten()
            .any(|e| e.secret_ref.as_ref().is_some_and(|r| r.name == secret))
    });
    let by_volume = pod.volumes.iter().flatten().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
    });
    by_env || by_volume
}

/// Deletes the Deployments of `monitor` that read `secret`; returns their names.
pub(crate) async fn delete_readers(
    client: &Client,
    metrics: &Metrics,
    monitor: &IotMonitor,
    secret: &str,
) -> Result<Vec<String>, ApplyError> {
    let namespace = monitor.namespace().unwrap_or_default();
    let owner_uid = monitor.uid().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let params = ListParams::default().labels(&children_selector(&monitor.name_any()));
    let deployments = api.list(&params).await.map_err(|source| ApplyError::Read {
        what: "Deployment list".into(),
        source,
    })?;
    let names = readers(&deployments.items, secret, &owner_uid);
    for name in &names {
        tracing::warn!(
            name,
            secret,
            "deleting a workload that reads a Secret no longer opted in"
        );
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => metrics.record_write("Deployment", "delete"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::Delete {
                    kind: "Deployment",
                    name: name.clone(),
                    source,
                });
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::desired;
    use crate::controller::fixtures::model;

    #[test]
    fn the_workloads_that_read_the_external_secret_are_its_readers() {
        let m = model(
            "{influxdb: {external: {url: 'http://i:8086', credentialsSecret: ext}}, aqi: {enabled: false}}",
        );
        let deployments = desired::build(&m).deployments;
        let mut found = readers(&deployments, "ext", &m.owner.uid);
        found.sort();
        // Grafana reads, coap-server writes; the simulator never sees InfluxDB.
        assert_eq!(found, ["lab-coap-server", "lab-grafana"]);
        assert!(readers(&deployments, "other", &m.owner.uid).is_empty());
        // Someone else's Deployments are never ours to delete.
        assert!(readers(&deployments, "ext", "another-uid").is_empty());
    }
}
