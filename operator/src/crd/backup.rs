//! `spec.influxdb.backup` and `spec.influxdb.restoreFrom`: scheduled backups of the deployed
//! InfluxDB, and a restore of one into a new (empty) volume (docs/operations.md).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduled backups with InfluxDB's own `influxd backup -portable`, stored on a volume the
/// operator creates or in an S3-compatible bucket.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// When to back up, in cron syntax (`0 3 * * *`: daily at 03:00 in the cluster's time
    /// zone, usually UTC), or `@hourly`, `@daily`, `@weekly`, `@monthly`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.matches('^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4})$')", "message": "influxdb.backup.schedule must be cron syntax (five fields, such as '0 3 * * *') or @hourly, @daily, @weekly, @monthly"}]))]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// How many backups to keep: older ones are deleted after each backup.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: i32,
    /// Where backups go. Default: a volume `<monitor>-backups` the operator creates, kept
    /// (like the data volume) when the IotMonitor is deleted.
    #[serde(default)]
    pub destination: BackupDestination,
    /// Container image of the backup tool; default: the operator's `iot-backup` image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub image: Option<String>,
}

fn default_keep() -> i32 {
    7
}

/// Where backups are stored: the backup volume (`volume`, the default) or an S3 bucket.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!(has(self.volume) && has(self.s3))", "message": "influxdb.backup.destination takes volume or s3, not both"}]))]
pub struct BackupDestination {
    /// The backup volume `<monitor>-backups` (the default when `s3` is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<BackupVolumeSpec>,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// The backup volume.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct BackupVolumeSpec {
    /// Size of the volume, a quantity such as `2Gi`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "influxdb.backup.destination.volume.size must be a quantity such as 2Gi"}]))]
    #[schemars(length(max = 32))]
    pub size: String,
    /// Storage class of the volume; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for BackupVolumeSpec {
    fn default() -> Self {
        Self {
            size: "1Gi".into(),
            storage_class_name: None,
        }
    }
}

/// An S3-compatible bucket; its keys come from a Secret that opts in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// The endpoint, such as `https://s3.eu-west-1.amazonaws.com` or `http://minio.storage:9000`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.startsWith('http://') || self.startsWith('https://')", "message": "influxdb.backup.destination.s3.endpoint must start with http:// or https://"}]))]
    #[schemars(length(min = 8, max = 512))]
    pub endpoint: String,
    /// The bucket (it must exist).
    #[schemars(length(min = 1, max = 63))]
    pub bucket: String,
    /// A prefix ("folder") in the bucket for this monitor's backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// The bucket's region.
    #[serde(default = "default_region")]
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Secret in the IotMonitor's namespace with the access key id and the secret access key.
    /// It is used only if it carries the label `iot.operator.dev/allow-backup: "true"` (its
    /// owner's consent to its keys being sent to `endpoint`).
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
    /// Key of the access key id in the Secret.
    #[serde(default = "default_access_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub access_key_id_key: String,
    /// Key of the secret access key in the Secret.
    #[serde(default = "default_secret_key_key")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_access_key_key: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_access_key_key() -> String {
    "accessKeyId".into()
}

fn default_secret_key_key() -> String {
    "secretAccessKey".into()
}

/// Restore a backup into this monitor's InfluxDB before the workloads write to it. Only into a
/// volume without the databases: a volume that already holds them is refused, nothing is
/// overwritten. The backup comes from `backup.destination` (the backup volume without `backup`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// `latest`, or a backup's name as `status.backup.lastSuccess.name` shows it (such as
    /// `lab-20270101T030000Z.tar.gz`).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 'latest' || self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')", "message": "influxdb.restoreFrom.backup must be latest or a backup's name"}]))]
    #[schemars(length(min = 1, max = 128))]
    pub backup: String,
}
