//! Grafana alerting, provisioned from files as the dashboards are: the built-in rule groups
//! ([`rules`]), the contact points and notification policy ([`notifications`]), and the
//! user's labelled rule files, all in one ConfigMap mounted at
//! `/etc/grafana/provisioning/alerting`. Contact points' URLs are `$VAR` references Grafana
//! expands from its environment, which takes them from the user's Secrets: no URL or token
//! is ever in a ConfigMap.

pub mod notifications;
pub mod rules;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, EnvVar};

use super::labels::{Component, owned_meta};
use super::pod::{env as var, env_from_secret};
use crate::controller::validate::{Alerts, ValidatedMonitor};

/// Where Grafana reads alerting provisioning files.
pub const ALERTING_DIR: &str = "/etc/grafana/provisioning/alerting";

/// The built-in rule groups' file in the alerting ConfigMap.
pub const RULES_FILE: &str = "iot-rules.yaml";
/// The contact points' and notification policy's file.
pub const NOTIFICATIONS_FILE: &str = "iot-notifications.yaml";

/// The alerting ConfigMap, `None` when alerting is off.
pub fn config_map(model: &ValidatedMonitor) -> Option<ConfigMap> {
    let alerts = model.alerts.as_ref()?;
    let mut data = BTreeMap::from([(RULES_FILE.to_owned(), to_yaml(&rules::document(model)))]);
    if let Some(doc) = notifications::document(model, alerts) {
        data.insert(NOTIFICATIONS_FILE.to_owned(), to_yaml(&doc));
    }
    for file in &alerts.user_rules {
        // ConfigMap names and keys are both `[-._a-zA-Z0-9]`: the joined name is a valid key
        // and file name, and unique.
        data.insert(
            user_file_name(&file.config_map, &file.key),
            file.content.clone(),
        );
    }
    Some(ConfigMap {
        metadata: owned_meta(model, &model.names.grafana_alerting, Component::Grafana),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// The file a user's rule file becomes in the provisioning directory.
pub fn user_file_name(config_map: &str, key: &str) -> String {
    format!("user.{config_map}.{key}")
}

/// The environment Grafana needs for the contact points: each `$VAR` from its Secret key, and
/// the mail server (`GF_SMTP_*`, its login from a Secret).
pub fn env(alerts: &Alerts) -> Vec<EnvVar> {
    let mut vars: Vec<EnvVar> = notifications::secret_refs(alerts)
        .map(|(var, r)| env_from_secret(&var, &r.name, &r.key))
        .collect();
    if let Some(smtp) = &alerts.smtp {
        vars.extend([
            var("GF_SMTP_ENABLED", "true"),
            var("GF_SMTP_HOST", smtp.host.clone()),
            var("GF_SMTP_FROM_ADDRESS", smtp.from_address.clone()),
        ]);
        if let Some((user, password)) = &smtp.login {
            vars.push(env_from_secret("GF_SMTP_USER", &user.name, &user.key));
            vars.push(env_from_secret(
                "GF_SMTP_PASSWORD",
                &password.name,
                &password.key,
            ));
        }
    }
    vars
}

fn to_yaml(value: &serde_json::Value) -> String {
    // A serde_json::Value always serializes to YAML; an empty file would only make Grafana
    // log a provisioning error, never crash the operator.
    serde_yaml::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests;
