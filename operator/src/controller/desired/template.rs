//! The pod-template skeleton every component shares: the selector and labels, the `restricted`
//! pod security context, no service-account token (unless the component talks to the API
//! server: only coap-server, which follows the device registry), and the component's
//! scheduling from the spec (nodeSelector, tolerations, affinity). Components add their
//! containers, volumes and annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::labels::{CONFIG_HASH, Component, labels, selector};
use super::pod::pod_security;
use crate::controller::validate::ValidatedMonitor;
use crate::crd::SchedulingSpec;

/// The selector of a component's pods and their template, for a Deployment or StatefulSet.
#[derive(Debug, Clone, PartialEq)]
pub struct PodTemplate {
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
}

pub struct PodTemplateBuilder<'a> {
    model: &'a ValidatedMonitor,
    component: Component,
    uid: i64,
    scheduling: &'a SchedulingSpec,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
    config_hash: Option<String>,
    termination_grace_period_seconds: Option<i64>,
    service_account: Option<String>,
}

impl<'a> PodTemplateBuilder<'a> {
    /// Pods of `component` running as `uid` (user, group and fsGroup), placed as `scheduling`
    /// says.
    pub fn new(
        model: &'a ValidatedMonitor,
        component: Component,
        uid: i64,
        scheduling: &'a SchedulingSpec,
        containers: Vec<Container>,
    ) -> Self {
        Self {
            model,
            component,
            uid,
            scheduling,
            containers,
            volumes: Vec::new(),
            config_hash: None,
            termination_grace_period_seconds: None,
            service_account: None,
        }
    }

    pub fn volumes(mut self, volumes: Vec<Volume>) -> Self {
        self.volumes = volumes;
        self
    }

    /// A hash of the configuration the pods read from ConfigMaps: when it changes, the pods roll.
    pub fn config_hash(mut self, hash: String) -> Self {
        self.config_hash = Some(hash);
        self
    }

    pub fn termination_grace_period_seconds(mut self, seconds: i64) -> Self {
        self.termination_grace_period_seconds = Some(seconds);
        self
    }

    /// The pods run as service account `name`, with its token mounted: for pods that talk to
    /// the API server. Every other pod has no token at all.
    pub fn service_account(mut self, name: &str) -> Self {
        self.service_account = Some(name.to_owned());
        self
    }

    pub fn build(self) -> PodTemplate {
        let SchedulingSpec {
            node_selector,
            tolerations,
            affinity,
        } = self.scheduling;
        let annotations = self
            .config_hash
            .map(|hash| BTreeMap::from([(CONFIG_HASH.to_owned(), hash)]));
        PodTemplate {
            selector: LabelSelector {
                match_labels: Some(selector(self.model, self.component)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(self.model, self.component)),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    security_context: Some(pod_security(self.uid)),
                    containers: self.containers,
                    volumes: (!self.volumes.is_empty()).then_some(self.volumes),
                    automount_service_account_token: Some(self.service_account.is_some()),
                    service_account_name: self.service_account,
                    termination_grace_period_seconds: self.termination_grace_period_seconds,
                    // Empty stays absent, so that a spec without scheduling applies no field.
                    node_selector: (!node_selector.is_empty()).then(|| node_selector.clone()),
                    tolerations: (!tolerations.is_empty()).then(|| tolerations.clone()),
                    affinity: affinity.clone(),
                    ..PodSpec::default()
                }),
            },
        }
    }
}
