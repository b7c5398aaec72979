//! The observed state: conditions, replicas of each component, endpoints.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of the stack.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IotMonitorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded` and, with autoscaling, `Autoscaling`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas of each component.
    #[serde(default)]
    pub components: ComponentsStatus,
    /// Where to reach the stack.
    #[serde(default)]
    pub endpoints: EndpointsStatus,
    /// Devices with a key in the Secret `<monitor>-devices`, the simulator's included: those
    /// coap-server accepts over DTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<i32>,
    /// The data volume and when it is expected to be full, from InfluxDB's own statistics
    /// (absent with an external InfluxDB, and until the first measurement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageStatus>,
    /// The scheduled backups: the last success and the last failure (with `influxdb.backup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The restore `influxdb.restoreFrom` asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

/// The scheduled backups.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The last backup that was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<BackupSuccess>,
    /// The last run that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<BackupFailure>,
    /// The backups stored after the last success, oldest first (at most the newest 30).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub available: Vec<String>,
}

/// A backup that was stored.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSuccess {
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Its name: what `restoreFrom.backup` takes.
    pub name: String,
    /// Its size in bytes.
    pub size: i64,
    /// The Job that made it.
    pub job: String,
}

/// A backup run that failed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupFailure {
    /// When it ended (RFC 3339).
    pub time: String,
    /// What went wrong and what to fix.
    pub message: String,
    /// The Job that failed (its pod's log has the rest).
    pub job: String,
}

/// The restore `influxdb.restoreFrom` asked for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// What `restoreFrom.backup` said (`latest` or a name).
    pub requested: String,
    /// `Running`, `Restored`, `Failed` or `Refused` (the volume already held the databases).
    pub phase: String,
    /// The backup restored, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// What happened, and what to do when it failed.
    pub message: String,
    /// The restore Job.
    pub job: String,
}

/// The storage forecast: the volume, what InfluxDB holds and writes, and when it fills.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// The volume's size as the claim reports it (`status.capacity`), such as `1Gi`.
    pub capacity: String,
    /// The volume's size in bytes.
    pub capacity_bytes: i64,
    /// Bytes of InfluxDB's shards (TSM files and write-ahead log), every database included.
    pub used_bytes: i64,
    /// Points written per second, every database included, between the last two measurements.
    pub points_per_second: f64,
    /// Bytes on disk per point written, over the shards written since InfluxDB started.
    pub bytes_per_point: f64,
    /// When the volume is expected to be full; absent when it is not expected to fill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill_date: Option<Time>,
    /// `Fits` (retention drops data before the volume fills), `Fills` (see `fillDate`), or
    /// `Full`.
    pub forecast: String,
    /// The forecast in words: what the data reaches at steady state, or when it fills.
    pub message: String,
    /// When these figures were measured. They are rewritten only when the forecast changes
    /// meaningfully, so an idle stack's status stays unwritten.
    pub measured_at: Time,
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
    /// `ready/desired`, or `Disabled`; for InfluxDB, followed by why its pod does not start
    /// when it has stalled (the container's last words and what to do).
    pub summary: String,
}

/// Where to reach the stack.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsStatus {
    /// Grafana URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grafana: Option<String>,
    /// The address registered devices send to: CoAP over DTLS (`coaps://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coap: Option<String>,
    /// The address of plain CoAP, with `spec.coap.plaintext` on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coap_plaintext: Option<String>,
}
