//! `spec.influxdb`: deployed in the namespace, or an existing external endpoint.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SchedulingSpec;
use super::{DatabaseRetentionSpec, DownsamplingTier, InfluxDbResources};
use crate::constants::DEFAULT_INFLUXDB_IMAGE;

/// InfluxDB 1.x: deployed as a StatefulSet with HTTP authentication, or an external endpoint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.databases.dht != self.databases.aqi", "message": "influxdb.databases.dht and influxdb.databases.aqi must differ"}, {"rule": "!has(self.external) || !has(self.downsampling) || size(self.downsampling) == 0", "message": "influxdb.downsampling needs the InfluxDB the operator deploys: it cannot set up tiers in an external one"}, {"rule": "!has(self.external) || (!has(self.backup) && !has(self.restoreFrom))", "message": "influxdb.backup and influxdb.restoreFrom need the deployed InfluxDB: back up an external InfluxDB where it runs"}]))]
pub struct InfluxDbSpec {
    /// Container image of InfluxDB 1.x (ignored with `external`).
    #[schemars(length(min = 1, max = 256))]
    pub image: String,
    /// CPU and memory of the InfluxDB container.
    pub resources: InfluxDbResources,
    /// Where the pods may run.
    #[serde(flatten)]
    pub scheduling: SchedulingSpec,
    /// The persistent volume holding the data.
    pub storage: StorageSpec,
    /// How long points are kept: an InfluxQL duration such as `30d`, `12w`, `24h`, or `INF`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 'INF' || self.matches('^[1-9][0-9]{0,5}(h|d|w)$')", "message": "influxdb.retention must be INF or a whole number of hours, days or weeks, such as 30d"}]))]
    #[schemars(length(max = 16))]
    pub retention: String,
    /// Raw retention per database, where it differs from `retention`.
    #[serde(skip_serializing_if = "is_default")]
    pub database_retention: DatabaseRetentionSpec,
    /// Downsampling tiers, finest first or in any order: each keeps the mean, min, max and count
    /// of every field per series and interval, in both databases, for longer than the raw
    /// points. Dashboards read the tier that suits their time range. None by default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.all(t, self.exists_one(u, u.every == t.every))", "message": "influxdb.downsampling has two tiers with the same every; each interval is one tier"}]))]
    pub downsampling: Vec<DownsamplingTier>,
    /// Database names, one per data set.
    pub databases: DatabasesSpec,
    /// How many series and tag values InfluxDB accepts before it refuses new ones: the bound on
    /// what senders can make it index (ignored with `external`).
    pub limits: InfluxLimitsSpec,
    /// Use an existing InfluxDB-compatible endpoint instead of deploying one. The credentials
    /// come from a Secret; the operator then creates no database or user there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalInfluxSpec>,
    /// Scheduled backups (not with `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<super::BackupSpec>,
    /// Restore a backup into a new, empty volume before the workloads write (not with
    /// `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<super::RestoreSpec>,
}

impl Default for InfluxDbSpec {
    fn default() -> Self {
        Self {
            image: DEFAULT_INFLUXDB_IMAGE.into(),
            resources: InfluxDbResources::default(),
            scheduling: SchedulingSpec::default(),
            storage: StorageSpec::default(),
            retention: "30d".into(),
            database_retention: DatabaseRetentionSpec::default(),
            downsampling: Vec::new(),
            databases: DatabasesSpec::default(),
            limits: InfluxLimitsSpec::default(),
            external: None,
            backup: None,
            restore_from: None,
        }
    }
}

/// The InfluxDB data volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!has(self.autoGrow) || !isQuantity(self.size) || !isQuantity(self.autoGrow.maxSize) || quantity(self.autoGrow.maxSize).isGreaterThan(quantity(self.size))", "message": "influxdb.storage.autoGrow.maxSize must be larger than influxdb.storage.size"}]))]
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
    /// Grow the volume before it fills: when the storage forecast (`status.storage`) expects it
    /// full within 7 days and the StorageClass has `allowVolumeExpansion: true`, the claim's
    /// request is raised by half, up to `maxSize`. Unset: never grown by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_grow: Option<AutoGrowSpec>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: "1Gi".into(),
            storage_class_name: None,
            delete_with_monitor: false,
            auto_grow: None,
        }
    }
}

/// How far the operator may grow the data volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoGrowSpec {
    /// The largest request the operator sets on the claim, a quantity such as `20Gi`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "influxdb.storage.autoGrow.maxSize must be a quantity such as 20Gi"}]))]
    #[schemars(length(min = 1, max = 32))]
    pub max_size: String,
}

/// InfluxDB's cardinality limits (its `max-series-per-database` and `max-values-per-tag`), set
/// explicitly so an open ingest path cannot grow the index until InfluxDB runs out of memory.
/// A write past a limit is refused for good: the CoAP server answers it 4.xx, not 5.03.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct InfluxLimitsSpec {
    /// Series per database (every place and sensor pair of the DHT data is one per field set;
    /// each AQI sensor is one). 0 removes the limit, which InfluxDB's default memory cannot back.
    #[schemars(range(min = 0, max = 100_000_000))]
    pub max_series_per_database: i64,
    /// Distinct values per tag key (places, sensors, AQI sensor ids). 0 removes the limit.
    #[schemars(range(min = 0, max = 10_000_000))]
    pub max_values_per_tag: i64,
}

impl Default for InfluxLimitsSpec {
    fn default() -> Self {
        Self {
            max_series_per_database: 200_000,
            max_values_per_tag: 100_000,
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
    /// Secret in the IotMonitor's namespace holding the username and password. It is used only if
    /// it carries the label `iot.operator.dev/allow-external-influxdb: "true"` (its owner's consent
    /// to its values being sent to `url`); the annotation `iot.operator.dev/external-influxdb-url`
    /// on it, if set, is the only `url` it may be sent to.
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

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}
