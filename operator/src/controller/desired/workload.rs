//! The Deployment shape shared by every Deployment of the stack (Grafana and our three
//! workloads).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::Container;

use super::labels::{Component, owned_meta};
use super::template::{PodTemplate, PodTemplateBuilder};
use crate::constants::WORKLOAD_UID;
use crate::controller::validate::ValidatedMonitor;
use crate::crd::SchedulingSpec;

/// How a Deployment replaces its pods on a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// New pods start before old ones stop (Kubernetes' default).
    Rolling,
    /// Every old pod stops before a new one starts: never two side by side.
    Recreate,
}

/// The pods of one of our own workloads: its one container, run as the images' non-root user.
pub fn workload_pods(
    model: &ValidatedMonitor,
    component: Component,
    scheduling: &SchedulingSpec,
    container: Container,
) -> PodTemplate {
    PodTemplateBuilder::new(model, component, WORKLOAD_UID, scheduling, vec![container]).build()
}

/// `replicas: None` leaves the count to the HPA.
pub fn deployment(
    model: &ValidatedMonitor,
    name: &str,
    component: Component,
    replicas: Option<i32>,
    rollout: Rollout,
    pods: PodTemplate,
) -> Deployment {
    Deployment {
        metadata: owned_meta(model, name, component),
        spec: DeploymentSpec {
            replicas,
            selector: pods.selector,
            strategy: match rollout {
                Rollout::Rolling => None,
                Rollout::Recreate => Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..DeploymentStrategy::default()
                }),
            },
            template: pods.template,
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}
