//! The `IotMonitor` custom resource: one object describes the whole IoT monitoring stack.
//!
//! Every field has a default, so `spec: {}` yields a working stack. Doc comments on the fields
//! become the OpenAPI descriptions that `kubectl explain iotmonitor.spec` prints, so they are
//! written for the person applying the resource. What the API server can reject (OpenAPI bounds
//! and CEL rules), it rejects before the operator ever sees the object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    printcolumn(name = "Grafana", type_ = "string", json_path = ".status.endpoints.grafana", description = "Where Grafana answers"),
    printcolumn(name = "CoAP", type_ = "string", json_path = ".status.endpoints.coap", description = "Where sensors send CoAP readings"),
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
}

/// CPU and memory for one container, resolved: what the pod gets. Requests are always set (the
/// autoscaler needs CPU requests).
#[derive(Clone, Debug, PartialEq)]
pub struct ResourcesSpec {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub cpu_limit: Option<String>,
}

/// One `resources` type per component, so that each field has that component's default: a spec
/// that sets only `cpuRequest` keeps the component's memory request and limit.
macro_rules! resources_spec {
    ($(#[$doc:meta])* $name:ident, $cpu:literal, $memory:literal, $memory_limit:literal) => {
        $(#[$doc])*
        #[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(default, rename_all = "camelCase")]
        pub struct $name {
            /// CPU request, a Kubernetes quantity such as `100m`.
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "cpuRequest must be a quantity such as 100m"}]))]
            #[schemars(length(max = 32))]
            pub cpu_request: String,
            /// Memory request, a Kubernetes quantity such as `64Mi`.
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "memoryRequest must be a quantity such as 64Mi"}]))]
            #[schemars(length(max = 32))]
            pub memory_request: String,
            /// Memory limit; the container is restarted when it uses more.
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "memoryLimit must be a quantity such as 256Mi"}]))]
            #[schemars(length(max = 32))]
            pub memory_limit: String,
            /// Optional CPU limit. Unset by default: CPU limits throttle and rarely help.
            #[serde(skip_serializing_if = "Option::is_none")]
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "cpuLimit must be a quantity such as 500m"}]))]
            #[schemars(length(max = 32))]
            pub cpu_limit: Option<String>,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    cpu_request: $cpu.into(),
                    memory_request: $memory.into(),
                    memory_limit: $memory_limit.into(),
                    cpu_limit: None,
                }
            }
        }

        impl From<&$name> for ResourcesSpec {
            fn from(r: &$name) -> Self {
                ResourcesSpec {
                    cpu_request: r.cpu_request.clone(),
                    memory_request: r.memory_request.clone(),
                    memory_limit: r.memory_limit.clone(),
                    cpu_limit: r.cpu_limit.clone(),
                }
            }
        }
    };
}

resources_spec!(
    /// InfluxDB's CPU and memory (defaults: 100m / 128Mi, limit 512Mi).
    InfluxDbResources, "100m", "128Mi", "512Mi"
);
resources_spec!(
    /// Grafana's CPU and memory (defaults: 100m / 128Mi, limit 512Mi).
    GrafanaResources, "100m", "128Mi", "512Mi"
);
resources_spec!(
    /// The CoAP server's CPU and memory (defaults: 50m / 32Mi, limit 128Mi).
    CoapResources, "50m", "32Mi", "128Mi"
);
resources_spec!(
    /// The simulator's CPU and memory (defaults: 10m / 16Mi, limit 64Mi).
    SimulatorResources, "10m", "16Mi", "64Mi"
);
resources_spec!(
    /// The AQI ingestor's CPU and memory (defaults: 50m / 64Mi, limit 256Mi).
    AqiResources, "50m", "64Mi", "256Mi"
);

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

/// InfluxDB 1.x: deployed as a StatefulSet with HTTP authentication, or an external endpoint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.databases.dht != self.databases.aqi", "message": "influxdb.databases.dht and influxdb.databases.aqi must differ"}]))]
pub struct InfluxDbSpec {
    /// Container image of InfluxDB 1.x (ignored with `external`).
    #[schemars(length(min = 1, max = 256))]
    pub image: String,
    /// CPU and memory of the InfluxDB container.
    pub resources: InfluxDbResources,
    /// The persistent volume holding the data.
    pub storage: StorageSpec,
    /// How long points are kept: an InfluxQL duration such as `30d`, `12w`, `24h`, or `INF`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 'INF' || self.matches('^[1-9][0-9]{0,5}(h|d|w)$')", "message": "influxdb.retention must be INF or a whole number of hours, days or weeks, such as 30d"}]))]
    #[schemars(length(max = 16))]
    pub retention: String,
    /// Database names, one per data set.
    pub databases: DatabasesSpec,
    /// Use an existing InfluxDB-compatible endpoint instead of deploying one. The credentials
    /// come from a Secret; the operator then creates no database or user there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalInfluxSpec>,
}

impl Default for InfluxDbSpec {
    fn default() -> Self {
        Self {
            image: "influxdb:1.8".into(),
            resources: InfluxDbResources::default(),
            storage: StorageSpec::default(),
            retention: "30d".into(),
            databases: DatabasesSpec::default(),
            external: None,
        }
    }
}

/// The InfluxDB data volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of the volume, a quantity such as `1Gi`. It can grow later where the storage class
    /// allows expansion; it can never shrink.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "influxdb.storage.size must be a quantity such as 1Gi"}]))]
    #[schemars(length(max = 32))]
    pub size: String,
    /// Storage class of the volume; the cluster's default class when unset. Fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Delete the volume and the generated credentials with the IotMonitor. By default both are
    /// kept, so re-creating an IotMonitor of the same name finds its data again.
    pub delete_with_monitor: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: "1Gi".into(),
            storage_class_name: None,
            delete_with_monitor: false,
        }
    }
}

/// InfluxDB database names.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct DatabasesSpec {
    /// Database of the DHT temperature and humidity readings written by the CoAP server.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "message": "database names are letters, digits and underscores"}]))]
    #[schemars(length(min = 1, max = 64))]
    pub dht: String,
    /// Database of the air-quality data written by the AQI ingestor.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.matches('^[A-Za-z_][A-Za-z0-9_]*$')", "message": "database names are letters, digits and underscores"}]))]
    #[schemars(length(min = 1, max = 64))]
    pub aqi: String,
}

impl Default for DatabasesSpec {
    fn default() -> Self {
        Self {
            dht: "dht".into(),
            aqi: "aqi".into(),
        }
    }
}

/// An InfluxDB 1.x compatible endpoint that already exists.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalInfluxSpec {
    /// Base URL, such as `http://influxdb.monitoring:8086`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.startsWith('http://') || self.startsWith('https://')", "message": "influxdb.external.url must start with http:// or https://"}]))]
    #[schemars(length(min = 8, max = 512))]
    pub url: String,
    /// Secret in the IotMonitor's namespace holding the username and password.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// Key of the username in the Secret.
    #[serde(default = "default_username_key")]
    #[schemars(length(min = 1, max = 253))]
    pub username_key: String,
    /// Key of the password in the Secret.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
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
    /// Replica bounds of the Grafana autoscaler.
    pub replicas: ReplicaBounds,
    /// Let visitors see the dashboards without logging in (read-only Viewer role).
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
            image: "grafana/grafana:10.2.3".into(),
            resources: GrafanaResources::default(),
            replicas: ReplicaBounds::default(),
            anonymous_viewer: true,
            service_type: ServiceType::ClusterIP,
            node_port: None,
        }
    }
}

/// The CoAP ingest server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!has(self.nodePort) || self.serviceType != 'ClusterIP'", "message": "coap.nodePort needs serviceType NodePort or LoadBalancer"}]))]
pub struct CoapSpec {
    /// Container image; `ghcr.io/iot-operator/coap-server:<operator version>` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub image: Option<String>,
    /// CPU and memory of the CoAP server container.
    pub resources: CoapResources,
    /// UDP port of the CoAP Service.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// How the CoAP Service is exposed.
    pub service_type: ServiceType,
    /// Fixed node port (30000-32767) with serviceType NodePort or LoadBalancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Replica bounds of the CoAP server autoscaler.
    pub replicas: ReplicaBounds,
    /// How readings are batched into InfluxDB writes.
    pub batch: BatchSpec,
}

impl Default for CoapSpec {
    fn default() -> Self {
        Self {
            image: None,
            resources: CoapResources::default(),
            port: 5683,
            service_type: ServiceType::ClusterIP,
            node_port: None,
            replicas: ReplicaBounds::default(),
            batch: BatchSpec::default(),
        }
    }
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionSpec>,
}

impl Default for AqiSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            image: None,
            resources: AqiResources::default(),
            source: "24h".into(),
            poll_seconds: 300,
            region: None,
        }
    }
}

/// A region, in exactly one of three forms.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "[has(self.countries), has(self.box), has(self.area)].filter(x, x).size() == 1", "message": "aqi.region needs exactly one of countries, box or area"}]))]
pub struct RegionSpec {
    /// Country codes as Sensor.Community writes them (ISO 3166 alpha-2; the UK is `GB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.all(c, c.matches('^[A-Z]{2}$'))", "message": "aqi.region.countries are two capital letters, such as GB"}]))]
    #[schemars(length(min = 1, max = 64), inner(length(min = 2, max = 2)))]
    pub countries: Option<Vec<String>>,
    /// A bounding box in degrees.
    #[serde(default, rename = "box", skip_serializing_if = "Option::is_none")]
    pub bounding_box: Option<BoxSpec>,
    /// A circle around a centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<AreaSpec>,
}

/// A box from `south` to `north` and from `west` to `east`, in degrees.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.south < self.north", "message": "aqi.region.box.south must be below north"},
    {"rule": "self.west < self.east", "message": "aqi.region.box.west must be below east (a box across the antimeridian takes two deployments)"}
]))]
pub struct BoxSpec {
    /// Southern edge, degrees of latitude (-90 to 90).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -90.0 && self <= 90.0", "message": "aqi.region.box.south must be between -90 and 90"}]))]
    pub south: f64,
    /// Western edge, degrees of longitude (-180 to 180).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -180.0 && self <= 180.0", "message": "aqi.region.box.west must be between -180 and 180"}]))]
    pub west: f64,
    /// Northern edge, degrees of latitude, above `south`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -90.0 && self <= 90.0", "message": "aqi.region.box.north must be between -90 and 90"}]))]
    pub north: f64,
    /// Eastern edge, degrees of longitude, east of `west`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -180.0 && self <= 180.0", "message": "aqi.region.box.east must be between -180 and 180"}]))]
    pub east: f64,
}

/// Every sensor within `radiusKm` of a centre, along the Earth's surface.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AreaSpec {
    /// Latitude of the centre, degrees.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -90.0 && self <= 90.0", "message": "aqi.region.area.latitude must be between -90 and 90"}]))]
    pub latitude: f64,
    /// Longitude of the centre, degrees.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= -180.0 && self <= 180.0", "message": "aqi.region.area.longitude must be between -180 and 180"}]))]
    pub longitude: f64,
    /// Radius in km.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self > 0.0 && self <= 20000.0", "message": "aqi.region.area.radiusKm must be above 0 and at most 20000"}]))]
    pub radius_km: f64,
}

/// Horizontal autoscaling, after the seed's auto-scaling group: 1 to 5 replicas, out above
/// 60 % CPU held 3 minutes, in below 42 % CPU held 15 minutes, one pod per 150 s either way.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"},
    {"rule": "self.scaleIn.cpuPercent < self.scaleOut.cpuPercent", "message": "autoscaling.scaleIn.cpuPercent must be below autoscaling.scaleOut.cpuPercent"}
]))]
pub struct AutoscalingSpec {
    /// Create HorizontalPodAutoscalers. When false, Grafana and the CoAP server run
    /// `minReplicas` replicas.
    pub enabled: bool,
    /// Fewest replicas of each autoscaled component.
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most replicas of each autoscaled component.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// At most one pod is added or removed per this many seconds.
    #[schemars(range(min = 1, max = 1800))]
    pub cooldown_seconds: i32,
    /// When to add replicas.
    pub scale_out: ScaleOutRule,
    /// When to remove replicas.
    pub scale_in: ScaleInRule,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_replicas: 1,
            max_replicas: 5,
            cooldown_seconds: 150,
            scale_out: ScaleOutRule::default(),
            scale_in: ScaleInRule::default(),
        }
    }
}

// Two types rather than one shared rule, so that each direction has its own per-field defaults:
// `scaleIn: {cpuPercent: 30}` keeps the 900 s hold instead of asking for it.

/// Add replicas when average CPU stays above a threshold for a while.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ScaleOutRule {
    /// Average CPU utilisation, in percent of the CPU request, above which replicas are added
    /// (the autoscaler's target).
    #[schemars(range(min = 1, max = 100))]
    pub cpu_percent: i32,
    /// Seconds the load must stay high before a replica is added (stabilization window).
    #[schemars(range(min = 0, max = 3600))]
    pub hold_seconds: i32,
}

impl Default for ScaleOutRule {
    fn default() -> Self {
        Self {
            cpu_percent: 60,
            hold_seconds: 180,
        }
    }
}

/// Remove replicas when average CPU stays below a threshold for a while.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ScaleInRule {
    /// Average CPU utilisation, in percent of the CPU request, below which replicas are removed;
    /// must be below `scaleOut.cpuPercent`.
    #[schemars(range(min = 1, max = 100))]
    pub cpu_percent: i32,
    /// Seconds the load must stay low before a replica is removed (stabilization window).
    #[schemars(range(min = 0, max = 3600))]
    pub hold_seconds: i32,
}

impl Default for ScaleInRule {
    fn default() -> Self {
        Self {
            cpu_percent: 42,
            hold_seconds: 900,
        }
    }
}

/// Observed state of the stack.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IotMonitorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas of each component.
    #[serde(default)]
    pub components: ComponentsStatus,
    /// Where to reach the stack.
    #[serde(default)]
    pub endpoints: EndpointsStatus,
}

/// Replicas of each component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentsStatus {
    /// InfluxDB (absent with an external InfluxDB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb: Option<ComponentStatus>,
    /// Grafana.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<ComponentStatus>,
    /// The CoAP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coap_server: Option<ComponentStatus>,
    /// The sensor simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator: Option<ComponentStatus>,
    /// The AQI ingestor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_ingestor: Option<ComponentStatus>,
}

/// Replicas of one component.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Replicas wanted now (the autoscaler's choice for autoscaled components).
    pub desired_replicas: i32,
    /// Replicas that pass their readiness probe.
    pub ready_replicas: i32,
    /// `ready/desired`, or `Disabled`.
    pub summary: String,
}

/// Where to reach the stack.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsStatus {
    /// Grafana URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<String>,
    /// CoAP address sensors send to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coap: Option<String>,
}

/// The CRD as YAML, exactly as `iot-operator crd` prints it and `crds/iotmonitor.yaml` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&IotMonitor::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_deserializes_to_the_defaults() {
        let spec: IotMonitorSpec = serde_yaml::from_str("{}").expect("parse");
        assert_eq!(spec, IotMonitorSpec::default());
        assert_eq!(spec.autoscaling.scale_out.cpu_percent, 60);
        assert_eq!(spec.autoscaling.scale_in.hold_seconds, 900);
        assert!(spec.simulator.enabled && spec.aqi.enabled);
    }

    #[test]
    fn checked_in_crd_matches_the_generated_one() {
        let generated = crd_yaml().expect("serialize crd");
        let checked_in = include_str!("../../crds/iotmonitor.yaml");
        assert!(
            generated == checked_in,
            "crds/iotmonitor.yaml is stale: run `make crd` (cargo run -p iot-operator -- crd > crds/iotmonitor.yaml)"
        );
    }

    #[test]
    fn chart_crd_matches_the_generated_one() {
        let generated = crd_yaml().expect("serialize crd");
        let in_chart = include_str!("../../charts/iot-operator/crds/iotmonitor.yaml");
        assert!(
            generated == in_chart,
            "charts/iot-operator/crds/iotmonitor.yaml is stale: cp crds/iotmonitor.yaml charts/iot-operator/crds/"
        );
    }

    #[test]
    fn examples_are_valid_monitors() {
        for (file, text) in [
            (
                "iotmonitor-minimal.yaml",
                include_str!("../../examples/iotmonitor-minimal.yaml"),
            ),
            (
                "iotmonitor.yaml",
                include_str!("../../examples/iotmonitor.yaml"),
            ),
        ] {
            let mut monitor: IotMonitor =
                serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"));
            monitor.metadata.namespace = Some("default".into());
            monitor.metadata.uid = Some("uid".into());
            crate::controller::validate::validate(&monitor)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn crd_names_and_printer_columns() {
        let yaml = crd_yaml().expect("serialize crd");
        for needle in [
            "group: iot.operator.dev",
            "- iotmon",
            "name: v1alpha1",
            "scope: Namespaced",
            "name: Ready",
            "name: Grafana",
            "name: CoAP",
            "name: AQI",
            "name: Age",
            "x-kubernetes-validations",
            "self.scaleIn.cpuPercent < self.scaleOut.cpuPercent",
        ] {
            assert!(yaml.contains(needle), "CRD lacks {needle}");
        }
    }

    #[test]
    fn crd_schema_carries_defaults_so_the_api_server_fills_them() {
        let yaml = crd_yaml().expect("serialize crd");
        let crd: serde_json::Value = serde_yaml::from_str(&yaml).expect("parse");
        let autoscaling = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["autoscaling"];
        assert_eq!(autoscaling["default"]["minReplicas"], 1);
        assert_eq!(autoscaling["default"]["scaleOut"]["cpuPercent"], 60);
    }
}
