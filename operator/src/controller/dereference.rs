//! The first step of the pipeline: read what the spec refers to, before validating, so that
//! validation stays pure: the Secret with the external InfluxDB credentials and the Secrets of
//! the alert contact points (only the names of their keys are kept, never the values), and the
//! ConfigMaps of alert rules labelled for the monitor (from the watch's store: no request).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use crate::constants::ALERT_RULES_LABEL;
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
}

/// A Secret the spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferencedSecret {
    Missing,
    /// It exists, with these keys.
    Keys(BTreeSet<String>),
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
        Some(external) => Some(read_secret(&api, &external.credentials_secret).await?),
        None => None,
    };
    let mut contact_point_secrets = BTreeMap::new();
    if monitor.spec.alerts.enabled {
        for name in contact_point_secret_names(monitor) {
            let found = read_secret(&api, name).await?;
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
    Ok(Dereferenced {
        external_credentials,
        contact_point_secrets,
        alert_rule_config_maps,
        prometheus_operator,
    })
}

/// The Secrets the contact points and the mail server name, each once.
fn contact_point_secret_names(monitor: &IotMonitor) -> BTreeSet<&str> {
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

async fn read_secret(api: &Api<Secret>, name: &str) -> Result<ReferencedSecret, DereferenceError> {
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| DereferenceError::Read {
            what: format!("Secret {name}"),
            source,
        })?;
    Ok(match secret {
        None => ReferencedSecret::Missing,
        Some(secret) => {
            ReferencedSecret::Keys(secret.data.unwrap_or_default().into_keys().collect())
        }
    })
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
