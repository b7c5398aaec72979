//! The first step of the pipeline: read what the spec refers to, before validating, so that
//! validation stays pure: the Secret with the external InfluxDB credentials and the Secrets of
//! the alert contact points (only whether each opts in and, if it does, the names of its keys
//! and the URL it allows are kept, never the values), and the ConfigMaps of alert rules
//! labelled for the monitor (from the watch's store: no request).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::constants::{
    ALERT_RULES_LABEL, ALERTING_SECRET_LABEL, BACKUP_SECRET_LABEL, EXTERNAL_CREDENTIALS_LABEL,
    EXTERNAL_URL_ANNOTATION, OPT_IN_VALUE, SMTP_HOST_ANNOTATION,
};
use crate::crd::IotMonitor;
use crate::error::concise;

/// A ConfigMap's data: key → content.
pub type ConfigMapData = BTreeMap<String, String>;

/// What the spec refers to, as found in the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dereferenced {
    /// The external credentials Secret; `None` when the spec names none.
    pub external_credentials: Option<ReferencedSecret>,
    /// Every Secret a contact point of `spec.alerts`, or its `smtp`, names, by name.
    pub contact_point_secrets: BTreeMap<String, ReferencedSecret>,
    /// The ConfigMaps labelled `iot.operator.dev/alert-rules: <monitor>`, by name.
    pub alert_rule_config_maps: BTreeMap<String, ConfigMapData>,
    /// The cluster serves the Prometheus operator's ServiceMonitor and PrometheusRule kinds
    /// (as last found by discovery: `prometheus_crds`).
    pub prometheus_operator: bool,
    /// The Secret of the backups' S3 keys; `None` when the spec names none.
    pub backup_credentials: Option<ReferencedSecret>,
}

/// A Secret the spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferencedSecret {
    Missing,
    /// It exists but does not carry its [`SecretUse`]'s label with the value `true`: its owner
    /// has not agreed to its use, so nothing else of it is kept.
    NotOptedIn,
    /// It exists and opts in.
    OptedIn {
        /// The names of its keys.
        keys: BTreeSet<String>,
        /// The one destination it may be sent to, if its owner named one: the external
        /// InfluxDB's URL ([`EXTERNAL_URL_ANNOTATION`]) or the mail server's `host:port`
        /// ([`SMTP_HOST_ANNOTATION`]).
        url: Option<String>,
    },
}

/// What the spec wants a Secret for; each use has its own opt-in label, so consent to one is
/// not consent to the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUse {
    /// `spec.influxdb.external.credentialsSecret`: sent to the external InfluxDB.
    ExternalInfluxdb,
    /// A contact point's Secret or `spec.alerts.smtp.credentialsSecret`: sent by Grafana to a
    /// webhook, Slack or mail server.
    Alerting,
    /// `spec.influxdb.backup.destination.s3.credentialsSecret`: sent by the backup and restore
    /// pods to the S3 endpoint.
    Backup,
}

impl SecretUse {
    /// The label (with value [`OPT_IN_VALUE`]) by which a Secret's owner allows this use.
    pub fn label(self) -> &'static str {
        match self {
            Self::ExternalInfluxdb => EXTERNAL_CREDENTIALS_LABEL,
            Self::Alerting => ALERTING_SECRET_LABEL,
            Self::Backup => BACKUP_SECRET_LABEL,
        }
    }
}

impl ReferencedSecret {
    /// What of `secret` the validate step may know for `purpose`: whether it opts in and, only
    /// if it does, its key names and allowed URL.
    pub fn of(secret: Option<&Secret>, purpose: SecretUse) -> Self {
        let Some(secret) = secret else {
            return Self::Missing;
        };
        if secret.labels().get(purpose.label()).map(String::as_str) != Some(OPT_IN_VALUE) {
            return Self::NotOptedIn;
        }
        let mut keys: BTreeSet<String> = secret
            .data
            .iter()
            .flat_map(|data| data.keys().cloned())
            .collect();
        // stringData is write-only on the API server, but a client may hand such an object over.
        keys.extend(secret.string_data.iter().flat_map(|d| d.keys().cloned()));
        let url = match purpose {
            SecretUse::ExternalInfluxdb => {
                secret.annotations().get(EXTERNAL_URL_ANNOTATION).cloned()
            }
            SecretUse::Alerting => secret.annotations().get(SMTP_HOST_ANNOTATION).cloned(),
            SecretUse::Backup => None,
        };
        Self::OptedIn { keys, url }
    }
}

/// An object the spec refers to could not be read; a retry may succeed.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    #[error("cannot read {what}: {}", concise(.source))]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl DereferenceError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "ReadFailed",
        }
    }
}

/// Reads every object the spec of `monitor` refers to; the labelled rule ConfigMaps come from
/// `rule_maps`, the watch's store (none while it is not running, as in unit tests), and
/// whether the Prometheus operator's kinds exist from the last discovery.
pub async fn dereference(
    client: &Client,
    monitor: &IotMonitor,
    rule_maps: Option<&Store<ConfigMap>>,
    prometheus_operator: bool,
) -> Result<Dereferenced, DereferenceError> {
    let namespace = monitor.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let external_credentials = match &monitor.spec.influxdb.external {
        Some(external) => Some(
            read_secret(
                &api,
                &external.credentials_secret,
                SecretUse::ExternalInfluxdb,
            )
            .await?,
        ),
        None => None,
    };
    let mut contact_point_secrets = BTreeMap::new();
    if monitor.spec.alerts.enabled {
        for name in contact_point_secret_names(monitor) {
            let found = read_secret(&api, name, SecretUse::Alerting).await?;
            contact_point_secrets.insert(name.to_owned(), found);
        }
    }
    let alert_rule_config_maps = match rule_maps {
        Some(store) if monitor.spec.alerts.enabled => labelled_rule_maps(
            store.state().iter().map(|cm| cm.as_ref()),
            &namespace,
            &monitor.name_any(),
        ),
        _ => BTreeMap::new(),
    };
    let backup_credentials = match backup_secret_name(monitor) {
        Some(name) => Some(read_secret(&api, name, SecretUse::Backup).await?),
        None => None,
    };
    Ok(Dereferenced {
        external_credentials,
        contact_point_secrets,
        alert_rule_config_maps,
        prometheus_operator,
        backup_credentials,
    })
}

/// The Secret of the backups' S3 keys, if the spec names one (backups or a restore from S3).
pub(crate) fn backup_secret_name(monitor: &IotMonitor) -> Option<&str> {
    monitor
        .spec
        .influxdb
        .backup
        .as_ref()?
        .destination
        .s3
        .as_ref()
        .map(|s3| s3.credentials_secret.as_str())
}

/// The Secrets the contact points and the mail server name, each once.
pub(crate) fn contact_point_secret_names(monitor: &IotMonitor) -> BTreeSet<&str> {
    let alerts = &monitor.spec.alerts;
    let smtp = alerts
        .smtp
        .as_ref()
        .and_then(|s| s.credentials_secret.as_deref());
    alerts
        .contact_points
        .iter()
        .filter_map(|c| {
            let webhook = c.webhook.as_ref().map(|w| &w.url_secret);
            webhook.or(c.slack.as_ref().map(|s| &s.url_secret))
        })
        .map(|r| r.name.as_str())
        .chain(smtp)
        .collect()
}

/// The data of the ConfigMaps of `namespace` labelled for monitor `name`.
pub(crate) fn labelled_rule_maps<'a>(
    config_maps: impl Iterator<Item = &'a ConfigMap>,
    namespace: &str,
    name: &str,
) -> BTreeMap<String, ConfigMapData> {
    config_maps
        .filter(|cm| cm.metadata.namespace.as_deref() == Some(namespace))
        .filter(|cm| cm.labels().get(ALERT_RULES_LABEL).map(String::as_str) == Some(name))
        .map(|cm| (cm.name_any(), cm.data.clone().unwrap_or_default()))
        .collect()
}

async fn read_secret(
    api: &Api<Secret>,
    name: &str,
    purpose: SecretUse,
) -> Result<ReferencedSecret, DereferenceError> {
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| DereferenceError::Read {
            what: format!("Secret {name}"),
            source,
        })?;
    Ok(ReferencedSecret::of(secret.as_ref(), purpose))
}

/// The monitors among `monitors` that name `secret` (as external credentials, with alerts on
/// for a contact point or the mail server, or for the backups' S3 keys): those a change of its
/// opt-in must wake.
pub fn monitors_naming<'a>(
    monitors: impl IntoIterator<Item = &'a IotMonitor>,
    secret: &Secret,
) -> Vec<ObjectRef<IotMonitor>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    monitors
        .into_iter()
        .filter(|m| m.namespace() == namespace)
        .filter(|m| {
            let external = m
                .spec
                .influxdb
                .external
                .as_ref()
                .is_some_and(|e| e.credentials_secret == name);
            external
                || (m.spec.alerts.enabled && contact_point_secret_names(m).contains(name.as_str()))
                || backup_secret_name(m) == Some(name.as_str())
        })
        .map(ObjectRef::from_obj)
        .collect()
}

/// Whether the API server serves both Prometheus operator kinds the operator creates. Discovery
/// needs no RBAC beyond what every authenticated client has.
pub async fn prometheus_operator_present(client: &Client) -> Result<bool, kube::Error> {
    match client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
    {
        Ok(list) => {
            let has = |name: &str| list.resources.iter().any(|r| r.name == name);
            Ok(has("servicemonitors") && has("prometheusrules"))
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const EXTERNAL: SecretUse = SecretUse::ExternalInfluxdb;

    fn secret(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Secret {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        Secret {
            metadata: ObjectMeta {
                name: Some("ext".into()),
                labels: map(labels),
                annotations: map(annotations),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                ("username".into(), ByteString(b"writer".to_vec())),
                ("password".into(), ByteString(b"s3cret".to_vec())),
            ])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_secret_without_the_label_is_not_opted_in_and_nothing_of_it_is_kept() {
        assert_eq!(
            ReferencedSecret::of(Some(&secret(&[], &[])), EXTERNAL),
            ReferencedSecret::NotOptedIn
        );
        // Only the value `true` opts in; an annotation of the label's name does not.
        for value in ["false", "yes", "True", ""] {
            let s = secret(&[(EXTERNAL_CREDENTIALS_LABEL, value)], &[]);
            assert_eq!(
                ReferencedSecret::of(Some(&s), EXTERNAL),
                ReferencedSecret::NotOptedIn
            );
        }
        let annotated = secret(&[], &[(EXTERNAL_CREDENTIALS_LABEL, "true")]);
        assert_eq!(
            ReferencedSecret::of(Some(&annotated), EXTERNAL),
            ReferencedSecret::NotOptedIn
        );
    }

    #[test]
    fn an_opted_in_secret_gives_its_key_names_and_allowed_url() {
        let s = secret(
            &[(EXTERNAL_CREDENTIALS_LABEL, "true")],
            &[(EXTERNAL_URL_ANNOTATION, "https://influx.example:8086")],
        );
        assert_eq!(
            ReferencedSecret::of(Some(&s), EXTERNAL),
            ReferencedSecret::OptedIn {
                keys: BTreeSet::from(["password".into(), "username".into()]),
                url: Some("https://influx.example:8086".into()),
            }
        );
        let found = format!("{:?}", ReferencedSecret::of(Some(&s), EXTERNAL));
        assert!(!found.contains("s3cret"), "no value is kept: {found}");
    }

    #[test]
    fn an_alerting_secret_gives_the_mail_server_it_is_pinned_to_and_not_an_influxdb_url() {
        let s = secret(
            &[(ALERTING_SECRET_LABEL, "true")],
            &[
                (SMTP_HOST_ANNOTATION, "mx.example.org:587"),
                (EXTERNAL_URL_ANNOTATION, "https://influx.example:8086"),
            ],
        );
        assert_eq!(
            ReferencedSecret::of(Some(&s), SecretUse::Alerting),
            ReferencedSecret::OptedIn {
                keys: BTreeSet::from(["password".into(), "username".into()]),
                url: Some("mx.example.org:587".into()),
            }
        );
    }

    #[test]
    fn a_secret_wakes_only_the_monitors_of_its_namespace_that_name_it() {
        use crate::controller::fixtures::monitor;
        let naming =
            monitor("{influxdb: {external: {url: 'http://i:8086', credentialsSecret: ext}}}");
        let mut other_namespace = naming.clone();
        other_namespace.metadata.namespace = Some("elsewhere".into());
        let mut other_secret =
            monitor("{influxdb: {external: {url: 'http://i:8086', credentialsSecret: other}}}");
        other_secret.metadata.name = Some("lab2".into());
        let internal = monitor("{}");
        let mut s = secret(&[(EXTERNAL_CREDENTIALS_LABEL, "true")], &[]);
        s.metadata.namespace = Some("iot".into());
        let woken = monitors_naming([&naming, &other_namespace, &other_secret, &internal], &s);
        assert_eq!(woken, vec![ObjectRef::from_obj(&naming)]);
    }

    #[test]
    fn no_secret_is_missing() {
        assert_eq!(
            ReferencedSecret::of(None, EXTERNAL),
            ReferencedSecret::Missing
        );
    }

    #[test]
    fn each_use_has_its_own_label() {
        let external = secret(&[(EXTERNAL_CREDENTIALS_LABEL, "true")], &[]);
        assert_eq!(
            ReferencedSecret::of(Some(&external), SecretUse::Alerting),
            ReferencedSecret::NotOptedIn,
            "consent to InfluxDB is not consent to a mail server"
        );
        let alerting = secret(
            &[(ALERTING_SECRET_LABEL, "true")],
            &[(EXTERNAL_URL_ANNOTATION, "https://influx.example:8086")],
        );
        assert_eq!(
            ReferencedSecret::of(Some(&alerting), EXTERNAL),
            ReferencedSecret::NotOptedIn
        );
        assert_eq!(
            ReferencedSecret::of(Some(&alerting), SecretUse::Alerting),
            ReferencedSecret::OptedIn {
                keys: BTreeSet::from(["password".into(), "username".into()]),
                url: None,
            }
        );
        for value in ["false", ""] {
            let s = secret(&[(ALERTING_SECRET_LABEL, value)], &[]);
            assert_eq!(
                ReferencedSecret::of(Some(&s), SecretUse::Alerting),
                ReferencedSecret::NotOptedIn
            );
        }
    }

    #[test]
    fn an_alerting_secret_wakes_the_monitors_whose_contact_points_or_smtp_name_it() {
        use crate::controller::fixtures::monitor;
        let webhook = monitor(
            "{alerts: {contactPoints: [{name: ops, webhook: {urlSecret: {name: ext, key: url}}}]}}",
        );
        let mut smtp = monitor(
            "{alerts: {contactPoints: [{name: m, email: {addresses: [a@b.c]}}], smtp: {host: 'mx:25', fromAddress: a@b.c, credentialsSecret: ext}}}",
        );
        smtp.metadata.name = Some("lab2".into());
        let mut off = monitor(
            "{alerts: {enabled: false, contactPoints: [{name: ops, webhook: {urlSecret: {name: ext, key: url}}}]}}",
        );
        off.metadata.name = Some("lab3".into());
        let mut s = secret(&[(ALERTING_SECRET_LABEL, "true")], &[]);
        s.metadata.namespace = Some("iot".into());
        let woken = monitors_naming([&webhook, &smtp, &off, &monitor("{}")], &s);
        assert_eq!(
            woken,
            vec![ObjectRef::from_obj(&webhook), ObjectRef::from_obj(&smtp)]
        );
    }
}
