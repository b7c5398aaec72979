//! The Deployment shape shared by our three workloads.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::labels::{Component, labels, owned_meta, selector};
use super::pod::{WORKLOAD_UID, pod_security};
use crate::controller::validate::Monitor;

/// `replicas: None` leaves the count to the HPA.
pub fn deployment(
    monitor: &Monitor,
    name: &str,
    component: Component,
    replicas: Option<i32>,
    recreate: bool,
    container: Container,
) -> Deployment {
    Deployment {
        metadata: owned_meta(monitor, name, component),
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector(monitor, component)),
                ..LabelSelector::default()
            },
            strategy: recreate.then(|| DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(monitor, component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(pod_security(WORKLOAD_UID)),
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}
