//! `spec.networkPolicy` and the sources `spec.coap.allowedSources` admits: who may talk to the
//! stack's pods, and where they may talk to.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The NetworkPolicies the operator puts around the stack: every pod denied by default, with
/// explicit allows (see docs/operator.md). They take effect only where the cluster runs a
/// NetworkPolicy implementation (Calico, Cilium, kube-router, ...).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies. Turn off only where no policy engine runs, or where the
    /// cluster's own policies do this job.
    pub enabled: bool,
    /// Labels of the namespaces whose pods may read the workloads' metrics port (9090), such
    /// as `kubernetes.io/metadata.name: monitoring`; every label must match. Unset: no
    /// namespace may (the kubelet's probes come from the node, which policies never block).
    /// With the Prometheus operator's ServiceMonitor, select Prometheus' namespace here.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": KEY_RULE, "message": KEY_MESSAGE}
    ]))]
    #[schemars(extend("maxProperties" = 16, "minProperties" = 1))]
    #[schemars(extend("additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    pub metrics_namespace_selector: Option<BTreeMap<String, String>>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            metrics_namespace_selector: None,
        }
    }
}

/// One source that may send CoAP: an address range, or pods chosen by their namespace's
/// labels and their own labels (both must match).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.cidr) != (has(self.namespaceSelector) || has(self.podSelector))", "message": "a coap.allowedSources entry is either a cidr or selectors (namespaceSelector and/or podSelector), not both and not neither"},
    {"rule": "!has(self.cidr) || isCIDR(self.cidr)", "message": "coap.allowedSources[].cidr must be an address range such as 192.0.2.0/24 or 2001:db8::/32"}
]))]
pub struct CoapSource {
    /// An address range, such as `192.0.2.0/24`: sensors outside the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub cidr: Option<String>,
    /// Labels of the namespaces whose pods may send. Unset with `podSelector` set: the
    /// monitor's own namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": KEY_RULE, "message": KEY_MESSAGE}
    ]))]
    #[schemars(extend("maxProperties" = 16))]
    #[schemars(extend("additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    pub namespace_selector: Option<BTreeMap<String, String>>,
    /// Labels of the pods that may send. Unset with `namespaceSelector` set: every pod of
    /// those namespaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": KEY_RULE, "message": KEY_MESSAGE}
    ]))]
    #[schemars(extend("maxProperties" = 16))]
    #[schemars(extend("additionalProperties" = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN}))]
    pub pod_selector: Option<BTreeMap<String, String>>,
}

// A label key is an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters
// (the API server's own rule for labels, which a NetworkPolicy's selector would otherwise break
// only when the operator applies it). A value, empty or such a name, is checked by the schema's
// pattern: a CEL rule over every value costs more than the API server's budget allows.
const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
const KEY_RULE: &str = "self.all(k, size(k) <= 316 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))";
const KEY_MESSAGE: &str = "label keys must be a name of at most 63 letters, digits, '-', '_' or '.' (starting and ending alphanumeric), optionally prefixed by a DNS subdomain and '/', such as kubernetes.io/metadata.name";
