//! Why a spec cannot be turned into objects. One variant per reason, so callers and tests
//! match on the reason; the message says what to change.

use super::MAX_REGISTRY_BYTES;
use crate::constants::{
    ALERTING_SECRET_LABEL, EXTERNAL_CREDENTIALS_LABEL, EXTERNAL_URL_ANNOTATION, MAX_NAME_LEN,
    OPT_IN_VALUE, SMTP_HOST_ANNOTATION,
};

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
    #[error("{field} needs serviceType NodePort or LoadBalancer")]
    NodePortWithoutExposure { field: &'static str },
    #[error(
        "coap.nodePort is the node port of plaintext CoAP, which is off: set coap.dtlsNodePort for coaps://, or coap.plaintext: true"
    )]
    NodePortWithoutPlaintext,
    #[error("coap.nodePort and coap.dtlsNodePort are both {port}; they must differ")]
    SameNodePorts { port: i32 },
    #[error(
        "coap.port {port} is the port of coaps://; give plaintext CoAP another one (5683 is its own)"
    )]
    PlaintextOnCoapsPort { port: i32 },
    #[error(
        "coap.devices entry {name:?} is not a DNS label: 1-63 of a-z, 0-9 and '-', beginning and ending with a letter or digit"
    )]
    BadDeviceName { name: String },
    #[error(
        "coap.devices entry {name:?} has place {place:?}; a place is 1-64 of A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    BadDevicePlace { name: String, place: String },
    #[error("coap.devices lists {name:?} more than once; device names are unique")]
    DuplicateDevice { name: String },
    #[error(
        "coap.devices entry {name:?} is the name of one of the simulator's {sensors} sensors (sim-1 to sim-{sensors}); rename the device, or lower simulator.sensors or disable the simulator"
    )]
    DeviceNameOfSimulator { name: String, sensors: i32 },
    #[error(
        "the device registry would hold {bytes} bytes of names and places ({devices} devices, the simulator's included); a ConfigMap holds at most {MAX_REGISTRY_BYTES}: register fewer devices, or use shorter names and places"
    )]
    RegistryTooLarge { devices: usize, bytes: usize },
    #[error("influxdb.databases.dht and influxdb.databases.aqi must differ")]
    SameDatabases,
    #[error(
        "{field} is {value:?}: use INF, or whole hours, days or weeks up to 5200w (100 years), such as 30d"
    )]
    BadRetention { field: String, value: String },
    #[error(
        "influxdb.downsampling[].every {value:?}: use whole minutes, hours or days from 1m to 7d, such as 5m"
    )]
    BadTierInterval { value: String },
    #[error(
        "influxdb.downsampling has {first:?} and {second:?}, the same interval twice; keep one of them"
    )]
    DuplicateTierInterval { first: String, second: String },
    #[error(
        "influxdb.downsampling tier every: {every} keeps its points {keep}, less than one interval; raise keep"
    )]
    TierKeepsLessThanItsInterval { every: String, keep: String },
    #[error(
        "influxdb.downsampling tier every: {every} needs two intervals of raw points (its continuous query reads them), but database {database} keeps raw points {retention}; shorten every or lengthen the retention"
    )]
    TierLongerThanRawRetention {
        every: String,
        database: String,
        retention: String,
    },
    #[error(
        "influxdb.downsampling needs the InfluxDB the operator deploys: remove influxdb.external or the tiers"
    )]
    DownsamplingWithExternal,
    #[error("simulator.places needs at least one place, such as room1")]
    NoPlaces,
    #[error("simulator.places entry {place:?} contains a comma; use one list entry per place")]
    PlaceWithComma { place: String },
    #[error(
        "Secret {secret} with the external InfluxDB credentials does not exist; create it or fix spec.influxdb.external.credentialsSecret"
    )]
    CredentialsSecretMissing { secret: String },
    #[error(
        "Secret {secret} does not allow its use as external InfluxDB credentials, so no pod gets it (the workloads would send its values to spec.influxdb.external.url); if it is meant for that, its owner opts in: kubectl label secret {secret} -n {namespace} {EXTERNAL_CREDENTIALS_LABEL}={OPT_IN_VALUE}"
    )]
    CredentialsSecretNotOptedIn { secret: String, namespace: String },
    #[error(
        "Secret {secret} may be sent only to {allowed} (its annotation {EXTERNAL_URL_ANNOTATION}), not to {url}; fix spec.influxdb.external.url, or the annotation if the Secret's owner agrees"
    )]
    CredentialsUrlNotAllowed {
        secret: String,
        allowed: String,
        url: String,
    },
    #[error("aqi.region needs exactly one of countries, box or area")]
    RegionNotOneForm,
    #[error(
        "Secret {secret} with the external InfluxDB credentials has no key {}, so no pod gets it; add the key (kubectl edit secret {secret} -n {namespace}), or name the key that holds the value in spec.influxdb.external.usernameKey or passwordKey",
        .keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(" and no key ")
    )]
    CredentialsKeyMissing {
        secret: String,
        namespace: String,
        keys: Vec<String>,
    },
    #[error(
        "alerts.{field} is {value:?}; use a whole number of seconds, minutes or hours, such as 90s, 10m or 2h"
    )]
    BadAlertDuration { field: &'static str, value: String },
    #[error("alerts.{field}.min must be below alerts.{field}.max")]
    AlertRangeCrossed { field: &'static str },
    #[error("alerts.contactPoints entry {name:?} needs exactly one of email, webhook or slack")]
    ContactPointTargets { name: String },
    #[error("alerts.contactPoints lists {name:?} more than once; contact point names are unique")]
    DuplicateContactPoint { name: String },
    #[error(
        "Secret {secret} named by {named_by} does not exist; create it in the monitor's namespace (Grafana keeps its last alerting configuration until then)"
    )]
    ContactPointSecretMissing {
        /// The field that names it: `alerts.contactPoints entry "ops"`, `alerts.smtp`.
        named_by: String,
        secret: String,
    },
    #[error(
        "Secret {secret} named by {named_by} does not allow its use for alerting, so Grafana does not get it (it would send its values to the webhook, Slack URL or mail server the spec names); if it is meant for that, its owner opts in: kubectl label secret {secret} -n {namespace} {ALERTING_SECRET_LABEL}={OPT_IN_VALUE}"
    )]
    ContactPointSecretNotOptedIn {
        named_by: String,
        secret: String,
        namespace: String,
    },
    #[error(
        "Secret {secret} may be sent only to the mail server {allowed} (its annotation {SMTP_HOST_ANNOTATION}), not to {host}; fix spec.alerts.smtp.host, or the annotation if the Secret's owner agrees"
    )]
    SmtpHostNotAllowed {
        secret: String,
        allowed: String,
        host: String,
    },
    #[error("Secret {secret} named by {named_by} has no key {key:?}")]
    ContactPointKeyMissing {
        named_by: String,
        secret: String,
        key: String,
    },
    #[error(
        "alerts.contactPoints entry {name:?} sends email: set alerts.smtp, the mail server Grafana sends through"
    )]
    EmailWithoutSmtp { name: String },
    #[error(
        "ConfigMap {config_map} (labelled iot.operator.dev/alert-rules) key {key:?} is not a Grafana alert rule file: {reason}"
    )]
    BadRuleFile {
        config_map: String,
        key: String,
        reason: String,
    },
}

impl InvalidSpec {
    /// The Secret (external credentials, or one `spec.alerts` names) whose owner does not (or
    /// no longer) allow this use: the workloads that read it must go, not only wait for a fix.
    pub fn withdrawn_secret(&self) -> Option<&str> {
        match self {
            Self::CredentialsSecretNotOptedIn { secret, .. }
            | Self::CredentialsUrlNotAllowed { secret, .. }
            | Self::ContactPointSecretNotOptedIn { secret, .. }
            | Self::SmtpHostNotAllowed { secret, .. } => Some(secret),
            _ => None,
        }
    }

    /// The stable category (metric label, Event and condition reason): a missing credential is
    /// told apart from a spec that contradicts itself, since the fix is elsewhere.
    pub fn category(&self) -> &'static str {
        match self {
            Self::CredentialsSecretMissing { .. }
            | Self::CredentialsKeyMissing { .. }
            | Self::ContactPointSecretMissing { .. }
            | Self::ContactPointKeyMissing { .. } => "MissingCredentials",
            // Not a spec error either: the Secret's owner decides.
            Self::CredentialsSecretNotOptedIn { .. }
            | Self::CredentialsUrlNotAllowed { .. }
            | Self::ContactPointSecretNotOptedIn { .. }
            | Self::SmtpHostNotAllowed { .. } => "CredentialsNotAllowed",
            Self::BadRuleFile { .. } => "InvalidAlertRules",
            _ => "InvalidSpec",
        }
    }
}
