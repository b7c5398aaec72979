//! Why a spec cannot be turned into objects. One variant per reason, so callers and tests
//! match on the reason; the message says what to change.

use crate::constants::MAX_NAME_LEN;

/// Why a spec cannot be resolved; each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    #[error("the IotMonitor has no metadata.name")]
    NoName,
    #[error("metadata.name is {len} characters; use at most {MAX_NAME_LEN}")]
    NameTooLong { len: usize },
    #[error("the IotMonitor has no metadata.namespace; it is namespaced")]
    NoNamespace,
    #[error("the IotMonitor has no metadata.uid yet")]
    NoUid,
    #[error("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas")]
    AutoscalingBoundsCrossed,
    #[error("autoscaling.scaleIn.cpuPercent must be below autoscaling.scaleOut.cpuPercent")]
    ScaleInNotBelowScaleOut,
    #[error(
        "{component}.replicas resolves to min {min} > max {max} (unset bounds come from spec.autoscaling); set both bounds or adjust spec.autoscaling"
    )]
    ComponentBoundsCrossed {
        component: &'static str,
        min: i32,
        max: i32,
    },
    #[error("{component}.nodePort needs serviceType NodePort or LoadBalancer")]
    NodePortWithoutExposure { component: &'static str },
    #[error("influxdb.databases.dht and influxdb.databases.aqi must differ")]
    SameDatabases,
    #[error("simulator.places needs at least one place, such as room1")]
    NoPlaces,
    #[error("simulator.places entry {place:?} contains a comma; use one list entry per place")]
    PlaceWithComma { place: String },
    #[error(
        "Secret {secret} with the external InfluxDB credentials does not exist; create it or fix spec.influxdb.external.credentialsSecret"
    )]
    CredentialsSecretMissing { secret: String },
    #[error("aqi.region needs exactly one of countries, box or area")]
    RegionNotOneForm,
    #[error("Secret {secret} with the external InfluxDB credentials has no key {key:?}")]
    CredentialsKeyMissing { secret: String, key: String },
}

impl InvalidSpec {
    /// The stable category (metric label, Event and condition reason): a missing credential is
    /// told apart from a spec that contradicts itself, since the fix is elsewhere.
    pub fn category(&self) -> &'static str {
        match self {
            Self::CredentialsSecretMissing { .. } | Self::CredentialsKeyMissing { .. } => {
                "MissingCredentials"
            }
            _ => "InvalidSpec",
        }
    }
}
