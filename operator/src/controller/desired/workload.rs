//! The Deployment shape shared by our three workloads.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::labels::{Component, labels, owned_meta, selector};
use super::pod::pod_security;
use crate::constants::WORKLOAD_UID;
use crate::controller::validate::ValidatedMonitor;

/// How a Deployment replaces its pods on a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// New pods start before old ones stop (Kubernetes' default).
    Rolling,
    /// Every old pod stops before a new one starts: never two side by side.
    Recreate,
}

/// `replicas: None` leaves the count to the HPA.
pub fn deployment(
    model: &ValidatedMonitor,
    name: &str,
    component: Component,
    replicas: Option<i32>,
    rollout: Rollout,
    container: Container,
) -> Deployment {
    Deployment {
        metadata: owned_meta(model, name, component),
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(selector(model, component)),
                ..LabelSelector::default()
            },
            strategy: match rollout {
                Rollout::Rolling => None,
                Rollout::Recreate => Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..DeploymentStrategy::default()
                }),
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(model, component)),
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
