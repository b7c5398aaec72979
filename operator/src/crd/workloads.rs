//! `spec.grafana`, `spec.coap`, `spec.simulator` and `spec.aqi`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AqiResources, CoapResources, GrafanaResources, RegionSpec, SimulatorResources};
use super::{CoapSource, SchedulingSpec};
use crate::constants::{COAP_PORT, DEFAULT_GRAFANA_IMAGE};

/// How a component's Service is exposed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also reachable on every node's IP at `nodePort`.
    NodePort,
    /// Also reachable through a cloud load balancer.
    LoadBalancer,
}

/// Optional replica bounds of one component; unset bounds come from `spec.autoscaling`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas", "message": "minReplicas must be less than or equal to maxReplicas"}]))]
pub struct ReplicaBounds {
    /// Fewest replicas; `spec.autoscaling.minReplicas` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: Option<i32>,
    /// Most replicas; `spec.autoscaling.maxReplicas` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: Option<i32>,
}

/// Grafana.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!has(self.nodePort) || self.serviceType != 'ClusterIP'", "message": "grafana.nodePort needs serviceType NodePort or LoadBalancer"}]))]
pub struct GrafanaSpec {
    /// Container image of Grafana (10.x or newer: the AQI map is a geomap panel).
    #[schemars(length(min = 1, max = 256))]
    pub image: String,
    /// CPU and memory of the Grafana container.
    pub resources: GrafanaResources,
    /// Where the pods may run.
    #[serde(flatten)]
    pub scheduling: SchedulingSpec,
    /// Replica bounds of the Grafana autoscaler.
    pub replicas: ReplicaBounds,
    /// Let visitors see the dashboards without logging in (read-only Viewer role, which can query
    /// every database through the datasource). Off by default: turn it on only where everyone who
    /// can reach Grafana may see the data.
    pub anonymous_viewer: bool,
    /// How the Grafana Service is exposed.
    pub service_type: ServiceType,
    /// Fixed node port (30000-32767) with serviceType NodePort or LoadBalancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

impl Default for GrafanaSpec {
    fn default() -> Self {
        Self {
            image: DEFAULT_GRAFANA_IMAGE.into(),
            resources: GrafanaResources::default(),
            scheduling: SchedulingSpec::default(),
            replicas: ReplicaBounds::default(),
            anonymous_viewer: false,
            service_type: ServiceType::ClusterIP,
            node_port: None,
        }
    }
}

/// The CoAP ingest server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.nodePort) || self.serviceType != 'ClusterIP'", "message": "coap.nodePort needs serviceType NodePort or LoadBalancer"},
    {"rule": "!has(self.dtlsNodePort) || self.serviceType != 'ClusterIP'", "message": "coap.dtlsNodePort needs serviceType NodePort or LoadBalancer"},
    {"rule": "!has(self.nodePort) || self.plaintext", "message": "coap.nodePort is the node port of plaintext CoAP, which is off: set coap.dtlsNodePort for coaps://, or coap.plaintext: true"},
    {"rule": "!has(self.nodePort) || !has(self.dtlsNodePort) || self.nodePort != self.dtlsNodePort", "message": "coap.nodePort and coap.dtlsNodePort must differ"},
    {"rule": "!self.plaintext || self.port != 5684", "message": "coap.port 5684 is the port of coaps://; give plaintext CoAP another one (5683 is its own)"}
]))]
pub struct CoapSpec {
    /// Container image; `ghcr.io/iot-operator/coap-server:<operator version>` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub image: Option<String>,
    /// CPU and memory of the CoAP server container.
    pub resources: CoapResources,
    /// Where the pods may run.
    #[serde(flatten)]
    pub scheduling: SchedulingSpec,
    /// Devices that may send readings over DTLS (`coaps://`, UDP 5684), each with its own
    /// pre-shared key. The operator generates a key per device into the Secret
    /// `<monitor>-devices` (read one with `kubectl get secret <monitor>-devices -o
    /// jsonpath='{.data.<name>}' | base64 -d`); deleting a key there rotates it, removing a
    /// device here revokes it. The simulator's sensors are registered as `sim-1`, `sim-2`, ...
    /// besides these.
    #[schemars(length(max = 5000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub devices: Vec<DeviceSpec>,
    /// Also accept plain, unauthenticated CoAP on `port`, from anyone who can reach it. Off,
    /// only registered devices can write, over DTLS.
    pub plaintext: bool,
    /// UDP port of plain CoAP on the Service, with `plaintext` on (coaps:// is always 5684).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// How the CoAP Service is exposed.
    pub service_type: ServiceType,
    /// Fixed node port (30000-32767) of plain CoAP, with `plaintext` on and serviceType
    /// NodePort or LoadBalancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Fixed node port (30000-32767) of coaps:// with serviceType NodePort or LoadBalancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub dtls_node_port: Option<i32>,
    /// Replica bounds of the CoAP server autoscaler.
    pub replicas: ReplicaBounds,
    /// How readings are batched into InfluxDB writes.
    pub batch: BatchSpec,
    /// Datagrams per second one source address may send; beyond its burst (one second's
    /// worth) the rest are dropped unanswered and counted (`coap_rate_limited_total`), so one
    /// host can neither flood the server nor use it to reflect traffic. Sensors behind one
    /// address (NAT, a load test) share it. 0 sets no limit.
    #[schemars(range(min = 0, max = 10_000_000))]
    pub rate_limit_per_source: i64,
    /// Who may send CoAP (with `networkPolicy.enabled`): address ranges and/or pods chosen by
    /// namespace and pod labels. Unset: what `serviceType` implies, any address for NodePort
    /// and LoadBalancer, the monitor's own namespace for ClusterIP. The simulator may always.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub allowed_sources: Option<Vec<CoapSource>>,
}

/// Readings per second one sensor address may send by default: far above any real sensor's
/// interval, and the load tests' rates per pod, yet a cap on what a single host can push.
pub const DEFAULT_COAP_RATE_LIMIT_PER_SOURCE: i64 = 5_000;

impl Default for CoapSpec {
    fn default() -> Self {
        Self {
            image: None,
            resources: CoapResources::default(),
            scheduling: SchedulingSpec::default(),
            devices: Vec::new(),
            plaintext: false,
            port: COAP_PORT,
            service_type: ServiceType::ClusterIP,
            node_port: None,
            dtls_node_port: None,
            replicas: ReplicaBounds::default(),
            batch: BatchSpec::default(),
            rate_limit_per_source: DEFAULT_COAP_RATE_LIMIT_PER_SOURCE,
            allowed_sources: None,
        }
    }
}

/// A device allowed to send over DTLS.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Its name (a DNS label): its PSK identity, the name of its key in the Secret
    /// `<monitor>-devices`, and the `sensor` tag of its readings. `sim-<n>` up to
    /// `simulator.sensors` are the simulator's while it is enabled.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The `place` tag of its readings, whatever its requests say (letters, digits, `.`, `_`
    /// and `-`).
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub place: String,
}

/// Write batching of the CoAP server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct BatchSpec {
    /// Most readings in one InfluxDB write.
    #[schemars(range(min = 1, max = 100000))]
    pub size: i32,
    /// Longest time a reading waits for its batch to fill, in milliseconds.
    #[schemars(range(min = 0, max = 60000))]
    pub linger_ms: i32,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            size: 1000,
            linger_ms: 20,
        }
    }
}

/// The DHT sensor simulator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SimulatorSpec {
    /// Run the simulator. Turn it off once real sensors send data.
    pub enabled: bool,
    /// Container image; `ghcr.io/iot-operator/sensor-sim:<operator version>` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub image: Option<String>,
    /// CPU and memory of the simulator container.
    pub resources: SimulatorResources,
    /// Where the pods may run.
    #[serde(flatten)]
    pub scheduling: SchedulingSpec,
    /// Number of simulated sensors.
    #[schemars(range(min = 1, max = 10000))]
    pub sensors: i32,
    /// Places the sensors are spread over (the `place` tag), such as room1.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.all(p, p.matches('^[A-Za-z0-9_.-]+$'))", "message": "simulator.places are letters, digits, '_', '.' and '-'"}]))]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 63)))]
    pub places: Vec<String>,
    /// Seconds between two readings of one sensor.
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i32,
}

impl Default for SimulatorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            image: None,
            resources: SimulatorResources::default(),
            scheduling: SchedulingSpec::default(),
            sensors: 4,
            places: vec!["room1".into()],
            interval_seconds: 5,
        }
    }
}

/// The Sensor.Community air-quality ingestor.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct AqiSpec {
    /// Run the ingestor. It needs outbound HTTPS to the data source.
    pub enabled: bool,
    /// Container image; `ghcr.io/iot-operator/aqi-ingestor:<operator version>` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub image: Option<String>,
    /// CPU and memory of the ingestor container.
    pub resources: AqiResources,
    /// Where the pods may run.
    #[serde(flatten)]
    pub scheduling: SchedulingSpec,
    /// Where the 24-hour means come from: `24h` (Sensor.Community's 24-hour file, with means
    /// computed from its 5-minute data whenever the file is empty, failing or stale), `5min`
    /// (only means computed from the 5-minute data), or an http(s) URL of a 24-hour feed in the
    /// same JSON format (then without computed means).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == '24h' || self == '5min' || self.startsWith('http://') || self.startsWith('https://')", "message": "aqi.source must be 24h, 5min or an http(s) URL"}]))]
    #[schemars(length(min = 1, max = 512))]
    pub source: String,
    /// Seconds between two polls of the source (the 24h feed changes every few minutes).
    #[schemars(range(min = 10, max = 86400))]
    pub poll_seconds: i32,
    /// Only the sensors of a region: exactly one of `countries`, `box` or `area`. The 5-minute
    /// data is then asked for the region alone; everything else is filtered by the ingestor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionSpec>,
}

impl Default for AqiSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            image: None,
            resources: AqiResources::default(),
            scheduling: SchedulingSpec::default(),
            source: "24h".into(),
            poll_seconds: 300,
            region: None,
        }
    }
}
