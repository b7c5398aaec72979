//! The `IotMonitor` custom resource: one object describes the whole IoT monitoring stack.
//!
//! Every field has a default, so `spec: {}` yields a working stack. Doc comments on the fields
//! become the OpenAPI descriptions that `kubectl explain iotmonitor.spec` prints, so they are
//! written for the person applying the resource. What the API server can reject (OpenAPI bounds
//! and CEL rules), it rejects before the operator ever sees the object.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

mod alerts;
mod autoscaling;
mod backup;
mod downsampling;
mod influxdb;
mod network;
mod region;
mod resources;
mod scheduling;
mod status;
#[cfg(test)]
mod tests;
mod workloads;

pub use self::alerts::*;
pub use self::autoscaling::*;
pub use self::backup::*;
pub use self::downsampling::*;
pub use self::influxdb::*;
pub use self::network::*;
pub use self::region::*;
pub use self::resources::*;
pub use self::scheduling::SchedulingSpec;
pub use self::status::*;
pub use self::workloads::*;

/// Desired state of an IoT monitoring stack: InfluxDB, Grafana with dashboards, the CoAP
/// server, a sensor simulator, the air-quality ingestor and their autoscalers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "iot.operator.dev",
    version = "v1alpha1",
    kind = "IotMonitor",
    namespaced,
    shortname = "iotmon",
    category = "iot",
    status = "IotMonitorStatus",
    derive = "PartialEq",
    doc = "An IoT monitoring stack (InfluxDB, Grafana, CoAP server, sensor simulator, AQI ingestor) managed by iot-operator.",
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: child object names are derived from it"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether every component is available"),
    printcolumn(name = "InfluxDB", type_ = "string", json_path = ".status.components.influxdb.summary", description = "InfluxDB: ready/desired, or External; why its pod does not start when it has stalled"),
    printcolumn(name = "Grafana", type_ = "string", json_path = ".status.endpoints.grafana", description = "Where Grafana answers"),
    printcolumn(name = "CoAP", type_ = "string", json_path = ".status.endpoints.coap", description = "Where registered devices send CoAP readings over DTLS"),
    printcolumn(name = "Devices", type_ = "integer", json_path = ".status.devices", description = "Devices with a key (spec.coap.devices and the simulator's sensors)"),
    printcolumn(name = "Autoscaling", type_ = "string", json_path = ".status.conditions[?(@.type==\"Autoscaling\")].reason", description = "Why the autoscalers scale or not: the reason of the Autoscaling condition"),
    printcolumn(name = "Backup", type_ = "date", json_path = ".status.backup.lastSuccess.time", description = "When the last backup succeeded"),
    printcolumn(name = "AQI", type_ = "string", json_path = ".status.components.aqiIngestor.summary", description = "Air-quality ingestor: ready/desired, or Disabled"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct IotMonitorSpec {
    /// Stop reconciling: the children are left exactly as they are until this is false again.
    #[serde(default)]
    pub paused: bool,
    /// The time-series database: deployed in the namespace, or an existing external endpoint.
    #[serde(default)]
    pub influxdb: InfluxDbSpec,
    /// Grafana with the provisioned InfluxDB datasources and the DHT and AQI dashboards.
    #[serde(default)]
    pub grafana: GrafanaSpec,
    /// The CoAP ingest server that sensors send readings to (UDP).
    #[serde(default)]
    pub coap: CoapSpec,
    /// A simulator of DHT sensors that sends temperature and humidity to the CoAP server.
    #[serde(default)]
    pub simulator: SimulatorSpec,
    /// The ingestor that pulls Sensor.Community air-quality data and computes the UK DAQI.
    #[serde(default)]
    pub aqi: AqiSpec,
    /// Horizontal autoscaling policy shared by Grafana and the CoAP server.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// Alert rules (a silent, stuck or out-of-range sensor, bad air, failing ingest) and who is
    /// notified (docs/alerts.md).
    #[serde(default)]
    pub alerts: AlertsSpec,
    /// The NetworkPolicies around the stack: deny by default, allow what the stack needs.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

/// The CRD as YAML, exactly as `iot-operator crd` prints it and `crds/iotmonitor.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&IotMonitor::crd())
}
