//! Labels and metadata shared by every child, so children can be found (orphan clean-up,
//! NetworkPolicy selectors) and traced back to their IotMonitor.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::controller::validate::ValidatedMonitor;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

pub const PART_OF_VALUE: &str = "iot-monitor";
pub const MANAGER: &str = "iot-operator";

/// Annotation on pod templates holding a hash of the configuration the pods read from
/// ConfigMaps, so a configuration change rolls the pods.
pub const CONFIG_HASH: &str = "iot.operator.dev/config-hash";

/// The components, as they appear in the `app.kubernetes.io/name` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Credentials,
    /// The device registry (keys and places) coap-server follows.
    Devices,
    Influxdb,
    Grafana,
    CoapServer,
    Simulator,
    AqiIngestor,
    /// The Prometheus path: the metrics Service, ServiceMonitor and PrometheusRule.
    Metrics,
    /// The NetworkPolicies that span several components.
    Network,
    /// The backup volume, CronJob and its pods.
    Backup,
    /// The restore Job and its pod.
    Restore,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credentials => "credentials",
            Self::Devices => "devices",
            Self::Influxdb => "influxdb",
            Self::Grafana => "grafana",
            Self::CoapServer => "coap-server",
            Self::Simulator => "sensor-sim",
            Self::AqiIngestor => "aqi-ingestor",
            Self::Metrics => "metrics",
            Self::Network => "network-policy",
            Self::Backup => "backup",
            Self::Restore => "restore",
        }
    }
}

/// The labels a component's pods are selected by. Kept small because Deployment selectors are
/// immutable: adding a label here later would need the Deployments re-created.
pub fn selector(model: &ValidatedMonitor, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), component.as_str().to_owned()),
        (INSTANCE.to_owned(), model.names.instance.clone()),
    ])
}

/// Labels on every child object and pod.
pub fn labels(model: &ValidatedMonitor, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector(model, component);
    labels.insert(PART_OF.to_owned(), PART_OF_VALUE.to_owned());
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels
}

/// Labels every pod of one IotMonitor carries, whatever its component (NetworkPolicy peers).
pub fn stack_selector(model: &ValidatedMonitor) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE.to_owned(), model.names.instance.clone()),
        (PART_OF.to_owned(), PART_OF_VALUE.to_owned()),
    ])
}

/// The label selector (as a string) that finds every child the operator manages for one
/// IotMonitor.
pub fn children_selector(instance: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{INSTANCE}={instance}")
}

/// Metadata of an owned child: garbage-collected with the IotMonitor.
pub fn owned_meta(model: &ValidatedMonitor, name: &str, component: Component) -> ObjectMeta {
    ObjectMeta {
        owner_references: Some(vec![model.owner.clone()]),
        ..unowned_meta(model, name, component)
    }
}

/// Metadata of a child that outlives the IotMonitor (data and the credentials that open it).
pub fn unowned_meta(model: &ValidatedMonitor, name: &str, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(model.namespace.clone()),
        labels: Some(labels(model, component)),
        ..ObjectMeta::default()
    }
}
