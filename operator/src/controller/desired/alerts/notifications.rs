//! Contact points and the notification policy, from `spec.alerts.contactPoints`. Every contact
//! point is told of every alert; a URL is `$ALERT_CONTACT_<n>_URL`, which Grafana expands from
//! its environment (contact point settings are interpolated; rule annotations are not, so their
//! `$labels` stay templates).

use serde_json::{Value, json};

use crate::controller::hash::content_hash;
use crate::controller::validate::{Alerts, ContactPointKind, ValidatedMonitor};
use crate::crd::SecretKeyRef;

/// The environment variable carrying contact point `index`'s URL.
pub fn url_var(index: usize) -> String {
    format!("ALERT_CONTACT_{index}_URL")
}

/// Each environment variable and the Secret key it comes from.
pub fn secret_refs(alerts: &Alerts) -> impl Iterator<Item = (String, &SecretKeyRef)> {
    alerts
        .contact_points
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match &c.kind {
            ContactPointKind::Email { .. } => None,
            ContactPointKind::Webhook { url, .. } | ContactPointKind::Slack { url, .. } => {
                Some((url_var(i), url))
            }
        })
}

/// A receiver uid: Grafana allows at most 40 characters, a contact point's name has up to 63.
fn receiver_uid(model: &ValidatedMonitor, name: &str) -> String {
    let hash = content_hash([model.names.instance.as_str(), name]);
    format!("iot-{hash}")
}

/// The contact points and the policy; `None` without contact points, so Grafana keeps its own
/// default policy.
pub fn document(model: &ValidatedMonitor, alerts: &Alerts) -> Option<Value> {
    let first = alerts.contact_points.first()?;
    let points: Vec<Value> = alerts
        .contact_points
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (kind, settings) = match &c.kind {
                ContactPointKind::Email { addresses } => (
                    "email",
                    json!({"addresses": addresses.join(";"), "singleEmail": false}),
                ),
                ContactPointKind::Webhook { .. } => (
                    "webhook",
                    json!({"url": format!("${}", url_var(i)), "httpMethod": "POST"}),
                ),
                ContactPointKind::Slack { recipient, .. } => {
                    let mut settings = json!({"url": format!("${}", url_var(i))});
                    if let Some(recipient) = recipient {
                        settings["recipient"] = recipient.clone().into();
                    }
                    ("slack", settings)
                }
            };
            json!({
                "orgId": 1,
                "name": c.name,
                "receivers": [{
                    "uid": receiver_uid(model, &c.name),
                    "type": kind,
                    "settings": settings,
                    "disableResolveMessage": false,
                }],
            })
        })
        .collect();
    // A child route without matchers matches every alert; `continue` passes it on to the next,
    // so every contact point is told. The root's receiver is only the fallback Grafana needs.
    let routes: Vec<Value> = alerts
        .contact_points
        .iter()
        .map(|c| json!({"receiver": c.name, "continue": true}))
        .collect();
    Some(json!({
        "apiVersion": 1,
        "contactPoints": points,
        "policies": [{
            "orgId": 1,
            "receiver": first.name,
            "group_by": ["grafana_folder", "alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        }],
    }))
}
