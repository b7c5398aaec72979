//! `spec.influxdb.downsampling` and `spec.influxdb.databaseRetention`: how long each database
//! keeps its raw points, and the coarser tiers kept beside them for long time ranges.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A downsampling tier: every `every`, the mean, min, max and count of each field of each
/// series are stored in a retention policy named after the interval (`ds_5m`), kept for `keep`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DownsamplingTier {
    /// Width of a tier's time bucket: whole minutes, hours or days from 1m to 7d, such as `5m`
    /// or `1h`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.matches('^[1-9][0-9]{0,4}(m|h|d)$')", "message": "influxdb.downsampling[].every must be a whole number of minutes, hours or days, such as 5m or 1h"}]))]
    #[schemars(length(min = 2, max = 6))]
    pub every: String,
    /// How long the tier's points are kept: `INF`, or whole hours, days or weeks (at least 1h,
    /// InfluxDB's shortest retention), such as `52w`.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 'INF' || self.matches('^[1-9][0-9]{0,5}(h|d|w)$')", "message": "influxdb.downsampling[].keep must be INF or a whole number of hours, days or weeks, such as 52w"}]))]
    #[schemars(length(max = 16))]
    pub keep: String,
}

/// Raw retention of one database, overriding `influxdb.retention` where set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default, rename_all = "camelCase")]
pub struct DatabaseRetentionSpec {
    /// How long the DHT database keeps raw points (`INF`, or hours, days or weeks).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 'INF' || self.matches('^[1-9][0-9]{0,5}(h|d|w)$')", "message": "influxdb.databaseRetention.dht must be INF or a whole number of hours, days or weeks, such as 7d"}]))]
    #[schemars(length(max = 16))]
    pub dht: Option<String>,
    /// How long the AQI database keeps raw points (`INF`, or hours, days or weeks).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 'INF' || self.matches('^[1-9][0-9]{0,5}(h|d|w)$')", "message": "influxdb.databaseRetention.aqi must be INF or a whole number of hours, days or weeks, such as 104w"}]))]
    #[schemars(length(max = 16))]
    pub aqi: Option<String>,
}
