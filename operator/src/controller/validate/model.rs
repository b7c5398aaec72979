//! The validated model: what the validate step resolves an IotMonitor into, and the desired
//! builders and the status read. Plain data, no Kubernetes client.

/// The one form of `aqi.region` that is set: the ingestor's own type, so the two cannot drift.
pub use iot_common::region::Region;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use std::collections::BTreeMap;

use crate::crd::{
    BatchSpec, CoapSource, InfluxLimitsSpec, ResourcesSpec, SchedulingSpec, SecretKeyRef,
    ServiceType,
};

/// Names of every child, derived from the IotMonitor's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub instance: String,
    pub credentials: String,
    pub influxdb: String,
    pub influxdb_headless: String,
    pub influxdb_data: String,
    pub influxdb_setup: String,
    pub grafana: String,
    pub grafana_datasources: String,
    pub grafana_dashboards: String,
    /// Grafana's alert rules, contact points and notification policy.
    pub grafana_alerting: String,
    /// The coap-server Deployment and Service, and its ServiceAccount, Role and RoleBinding.
    pub coap_server: String,
    /// The device registry: the Secret of keys and the ConfigMap of places.
    pub devices: String,
    pub simulator: String,
    pub aqi_ingestor: String,
    /// The Prometheus path: the metrics Service and the ServiceMonitor.
    pub metrics: String,
    /// The backup volume (PersistentVolumeClaim).
    pub backups: String,
    /// The backup CronJob.
    pub backup: String,
}

impl Names {
    pub(super) fn new(instance: &str) -> Self {
        let n = |suffix: &str| format!("{instance}-{suffix}");
        Self {
            instance: instance.to_owned(),
            credentials: n("credentials"),
            influxdb: n("influxdb"),
            influxdb_headless: n("influxdb-hl"),
            influxdb_data: n("influxdb-data"),
            influxdb_setup: n("influxdb-setup"),
            grafana: n("grafana"),
            grafana_datasources: n("grafana-datasources"),
            grafana_dashboards: n("grafana-dashboards"),
            grafana_alerting: n("grafana-alerting"),
            coap_server: n("coap-server"),
            devices: n("devices"),
            simulator: n("sensor-sim"),
            aqi_ingestor: n("aqi-ingestor"),
            metrics: n("metrics"),
            backups: n("backups"),
            backup: n("backup"),
        }
    }
}

/// Replica bounds after merging a component's own bounds with `spec.autoscaling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub min: i32,
    pub max: i32,
}

/// The autoscaler policy, in the units the HPA uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalePolicy {
    pub target_cpu_percent: i32,
    pub scale_up_window_seconds: i32,
    pub scale_down_window_seconds: i32,
    /// `1 - scaleIn/scaleOut`: below this fraction under target the HPA scales in.
    pub scale_down_tolerance: f64,
    pub cooldown_seconds: i32,
}

/// How workloads authenticate to InfluxDB: a key in a Secret for the user and the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretCredentials {
    pub secret: String,
    pub username_key: String,
    pub password_key: String,
}

/// InfluxDB as deployed by the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct InternalInflux {
    pub image: String,
    pub resources: ResourcesSpec,
    /// Where the pods may run (nodeSelector, tolerations, affinity).
    pub scheduling: SchedulingSpec,
    pub storage_size: String,
    pub storage_class_name: Option<String>,
    pub delete_with_monitor: bool,
    /// How long each database keeps raw points, and the downsampling tiers.
    pub retention: Retention,
    /// `storage.autoGrow.maxSize`: how far the operator may grow the volume; `None`: it does not.
    pub auto_grow_max: Option<String>,
    pub limits: InfluxLimitsSpec,
}

/// Raw retention per database (InfluxQL durations as the spec gave them, and in seconds;
/// `None` is `INF`) and the downsampling tiers, finest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub dht: String,
    pub dht_seconds: Option<u64>,
    pub aqi: String,
    pub aqi_seconds: Option<u64>,
    pub tiers: Vec<Tier>,
}

/// One downsampling tier, in both databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub every_seconds: u64,
    /// `INF` or an InfluxQL duration, as the spec gave it.
    pub keep: String,
    pub keep_seconds: Option<u64>,
}

impl Tier {
    /// The retention policy holding the tier: `ds_` and the interval's shortest name.
    pub fn policy(&self) -> String {
        format!("ds_{}", super::retention::interval_name(self.every_seconds))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InfluxMode {
    // Boxed: the internal settings are large, and External carries none.
    Internal(Box<InternalInflux>),
    External,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Influx {
    pub mode: InfluxMode,
    /// Base URL the workloads and Grafana use.
    pub url: String,
    pub dht_db: String,
    pub aqi_db: String,
    /// Credentials of the workloads (write access).
    pub writer: SecretCredentials,
    /// Credentials of Grafana (read access).
    pub reader: SecretCredentials,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grafana {
    pub image: String,
    pub resources: ResourcesSpec,
    /// Where the pods may run (nodeSelector, tolerations, affinity).
    pub scheduling: SchedulingSpec,
    pub replicas: Replicas,
    pub anonymous_viewer: bool,
    pub service_type: ServiceType,
    pub node_port: Option<i32>,
}

/// A device registered with coap-server: its name is its PSK identity and the name of its key
/// in the devices Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub place: String,
}

/// The name simulated sensor `index` (from 0) has as a device: sensor-sim's own naming.
pub fn simulated_device_name(index: i32) -> String {
    format!("sim-{}", index + 1)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Coap {
    pub image: String,
    pub resources: ResourcesSpec,
    /// Where the pods may run (nodeSelector, tolerations, affinity).
    pub scheduling: SchedulingSpec,
    /// The Service port of plain CoAP; only with `plaintext`.
    pub port: i32,
    pub service_type: ServiceType,
    /// Of plain CoAP; only with `plaintext`.
    pub node_port: Option<i32>,
    pub dtls_node_port: Option<i32>,
    /// Plain CoAP is accepted too (on `port`), not only DTLS.
    pub plaintext: bool,
    /// The user's devices, in the spec's order; the simulator's are in [`Simulator::devices`].
    pub devices: Vec<Device>,
    pub replicas: Replicas,
    pub batch: BatchSpec,
    pub rate_limit_per_source: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Simulator {
    pub image: String,
    pub resources: ResourcesSpec,
    /// Where the pods may run (nodeSelector, tolerations, affinity).
    pub scheduling: SchedulingSpec,
    pub sensors: i32,
    pub places: Vec<String>,
    pub interval_seconds: i32,
    /// Its sensors as devices: sensor `i` is `sim-<i+1>` at `places[i % places.len()]`, as
    /// sensor-sim names and places them.
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aqi {
    pub image: String,
    pub resources: ResourcesSpec,
    /// Where the pods may run (nodeSelector, tolerations, affinity).
    pub scheduling: SchedulingSpec,
    pub source: String,
    pub poll_seconds: i32,
    pub region: Option<Region>,
}

/// A duration of an alert rule: as the spec wrote it (`10m`; InfluxQL, Grafana and Prometheus
/// read it alike) and in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDuration {
    pub text: String,
    pub seconds: u64,
}

/// Where a contact point sends, with the Secret keys its URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactPointKind {
    Email {
        addresses: Vec<String>,
    },
    Webhook {
        url: SecretKeyRef,
        /// The URL's TCP port, as the spec says (the URL itself is never read).
        port: i32,
    },
    Slack {
        url: SecretKeyRef,
        recipient: Option<String>,
    },
}

/// A contact point, resolved: its Secret exists with the key it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactPoint {
    pub name: String,
    pub kind: ContactPointKind,
}

/// A file of alert rules from a ConfigMap the user labelled for this monitor: already parsed
/// and checked against Grafana's schema, so Grafana never starts on a file it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRuleFile {
    /// The ConfigMap it came from.
    pub config_map: String,
    /// The key in that ConfigMap (a file name ending in .yaml, .yml or .json).
    pub key: String,
    pub content: String,
}

/// Grafana's mail server, its login (if any) from a Secret whose keys exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    pub host: String,
    pub from_address: String,
    /// The user and the password, each a key of a Secret.
    pub login: Option<(SecretKeyRef, SecretKeyRef)>,
}

/// The built-in rules' thresholds, the contact points and the user's rule files.
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    pub silent_after: RuleDuration,
    pub stuck_after: RuleDuration,
    pub aqi_stale_after: RuleDuration,
    pub temperature: (f64, f64),
    pub humidity: (f64, f64),
    pub aqi_band: i32,
    pub ingest_failure_percent: i32,
    pub contact_points: Vec<ContactPoint>,
    pub smtp: Option<Smtp>,
    pub user_rules: Vec<UserRuleFile>,
}

/// The validated, resolved model of one IotMonitor: everything the desired builders and the
/// status need, and nothing they would have to work out again.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedMonitor {
    pub namespace: String,
    pub names: Names,
    /// Owner reference to the IotMonitor, put on every child that dies with it.
    pub owner: OwnerReference,
    pub paused: bool,
    pub influx: Influx,
    pub grafana: Grafana,
    pub coap: Coap,
    pub simulator: Option<Simulator>,
    pub aqi: Option<Aqi>,
    /// `None` when autoscaling is off: components then run `replicas.min` pods.
    pub autoscaling: Option<ScalePolicy>,
    /// `None` when alerting is off.
    pub alerts: Option<Alerts>,
    /// The cluster has the Prometheus operator's ServiceMonitor and PrometheusRule kinds.
    pub prometheus_operator: bool,
    /// `None` when `networkPolicy.enabled` is false: no NetworkPolicy is wanted.
    pub network: Option<Network>,
    /// Scheduled backups (`influxdb.backup`).
    pub backup: Option<Backup>,
    /// The restore `influxdb.restoreFrom` asks for.
    pub restore: Option<Restore>,
}

/// Where backups are kept, or why they cannot be (the S3 keys' Secret does not opt in).
pub type Target = Result<BackupTarget, super::backup::Blocked>;

/// Where backups are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupTarget {
    /// The backup volume, created by the operator.
    Volume {
        claim: String,
        size: String,
        storage_class_name: Option<String>,
    },
    /// An S3-compatible bucket; the keys come from a Secret that opts in and has both.
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
        region: String,
        /// The access key id (as `username_key`) and the secret key (as `password_key`).
        credentials: SecretCredentials,
    },
}

/// Scheduled backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub schedule: String,
    pub keep: i32,
    /// The iot-backup image.
    pub image: String,
    pub target: Target,
}

/// A restore of a backup before the workloads write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// `latest` or a backup's name.
    pub requested: String,
    /// The restore Job's name (one per requested backup).
    pub job: String,
    /// The iot-backup image, which fetches the backup.
    pub image: String,
    pub target: Target,
    /// The restore Job has ended (the status says so): scheduled backups may run again. Until
    /// then they are suspended, so no backup of a half-restored database becomes the latest.
    pub finished: bool,
}

/// What the NetworkPolicies allow beyond the stack's own paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Namespaces (by their labels) whose pods may read the metrics ports; `None`: none may.
    pub metrics_namespaces: Option<BTreeMap<String, String>>,
    pub coap_sources: CoapSources,
    /// Where the API server answers, as the operator found it at start; `None` when it could
    /// not be read (then coap-server may reach any address on the usual API ports).
    pub api_server: Option<ApiServer>,
    /// The namespace the operator's own pods run in: they read InfluxDB's statistics for the
    /// storage forecast. `None`: unknown, and no policy names them.
    pub operator_namespace: Option<String>,
}

/// Who may send CoAP besides the simulator.
#[derive(Debug, Clone, PartialEq)]
pub enum CoapSources {
    /// Any address: the default of a NodePort or LoadBalancer Service.
    Any,
    /// Every pod of the monitor's namespace: the default of a ClusterIP Service.
    OwnNamespace,
    /// `coap.allowedSources` as given.
    Listed(Vec<CoapSource>),
}

/// The API server's endpoints (the `kubernetes` Service's EndpointSlices in `default`): a
/// NetworkPolicy sees the connection after the Service address is translated to one of these.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiServer {
    pub addresses: Vec<String>,
    pub ports: Vec<i32>,
}

impl ValidatedMonitor {
    /// The model with the API server's endpoints the operator found at start (they are not
    /// part of the spec, so validation does not see them).
    #[must_use]
    pub fn with_api_server(mut self, api_server: Option<ApiServer>) -> Self {
        if let Some(network) = &mut self.network {
            network.api_server = api_server;
        }
        self
    }

    /// The model with the namespace the operator runs in (not part of the spec either).
    #[must_use]
    pub fn with_operator_namespace(mut self, namespace: Option<String>) -> Self {
        if let Some(network) = &mut self.network {
            network.operator_namespace = namespace;
        }
        self
    }

    /// The model with what the status knows of the restore: whether its Job has ended.
    #[must_use]
    pub fn with_restore_status(mut self, status: Option<&crate::crd::RestoreStatus>) -> Self {
        if let Some(restore) = &mut self.restore {
            restore.finished = status.is_some_and(|s| s.job == restore.job && s.phase != "Running");
        }
        self
    }

    /// Every device coap-server accepts: the user's, then the simulator's.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        let simulated = self.simulator.iter().flat_map(|s| &s.devices);
        self.coap.devices.iter().chain(simulated)
    }
}
