//! `spec.alerts`: the built-in alert rules, their thresholds, and who is told.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Built-in alert rules (on by default), each with its threshold, and the contact points that
/// are notified. Grafana evaluates the rules on InfluxDB; where the cluster runs the Prometheus
/// operator, a PrometheusRule carries the rules on the workloads' metrics (docs/alerts.md).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.temperature.min < self.temperature.max", "message": "alerts.temperature.min must be below alerts.temperature.max"},
    {"rule": "self.humidity.min < self.humidity.max", "message": "alerts.humidity.min must be below alerts.humidity.max"},
    {"rule": "self.contactPoints.all(c, self.contactPoints.exists_one(d, d.name == c.name))", "message": "alerts.contactPoints names must be unique"},
    {"rule": "has(self.smtp) || !self.contactPoints.exists(c, has(c.email))", "message": "an email contact point needs alerts.smtp, the mail server Grafana sends through"}
]))]
pub struct AlertsSpec {
    /// Provision the built-in rules, the contact points and the notification policy.
    pub enabled: bool,
    /// SensorSilent: a sensor that has sent nothing for this long (`10m`, `90s`, `2h`).
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.matches('^[1-9][0-9]{0,4}(s|m|h)$')", "message": "alerts.silentAfter must be a whole number of seconds, minutes or hours, such as 90s, 10m or 2h"}]))]
    #[schemars(length(max = 8))]
    pub silent_after: String,
    /// SensorStuck: a sensor whose readings have all been the same for this long.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.matches('^[1-9][0-9]{0,4}(s|m|h)$')", "message": "alerts.stuckAfter must be a whole number of seconds, minutes or hours, such as 90s, 10m or 2h"}]))]
    #[schemars(length(max = 8))]
    pub stuck_after: String,
    /// SensorOutOfRange for temperature, in °C: readings at or beyond these bounds (a DHT22
    /// measures -40 to 80 °C).
    pub temperature: RangeSpec,
    /// SensorOutOfRange for relative humidity, in %: readings at or beyond these bounds (a
    /// DHT22 measures 0 to 100 %RH).
    pub humidity: RangeSpec,
    /// AirQualityHigh: a location whose Daily Air Quality Index is at or above this band (1-10;
    /// 7 is the first "High" band).
    #[schemars(range(min = 1, max = 10))]
    pub aqi_band: i32,
    /// AqiIngestorStale: no new air-quality point for this long.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.matches('^[1-9][0-9]{0,4}(s|m|h)$')", "message": "alerts.aqiStaleAfter must be a whole number of seconds, minutes or hours, such as 90s, 10m or 2h"}]))]
    #[schemars(length(max = 8))]
    pub aqi_stale_after: String,
    /// IngestFailing: the share of what the CoAP servers received that was refused or answered
    /// 5.03, in percent over 5 minutes, above which it fires.
    #[schemars(range(min = 1, max = 100))]
    pub ingest_failure_percent: i32,
    /// Who is notified of every firing alert: each contact point gets all of them. Their URLs
    /// come from Secrets; none in the spec. With network policies on, Grafana may reach webhooks
    /// on their `port`, Slack on 443, and the SMTP server on its port.
    #[schemars(length(max = 16))]
    pub contact_points: Vec<ContactPointSpec>,
    /// The mail server Grafana sends email notifications through; email contact points need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            silent_after: "10m".into(),
            stuck_after: "30m".into(),
            temperature: RangeSpec {
                min: -40.0,
                max: 80.0,
            },
            humidity: RangeSpec {
                min: 0.0,
                max: 100.0,
            },
            aqi_band: 7,
            aqi_stale_after: "1h".into(),
            ingest_failure_percent: 5,
            contact_points: Vec::new(),
            smtp: None,
        }
    }
}

/// Bounds of what a sensor can measure.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct RangeSpec {
    /// The lowest value a working sensor reports below the edge.
    pub min: f64,
    /// The highest value a working sensor reports below the edge.
    pub max: f64,
}

/// Where notifications go: exactly one of `email`, `webhook` or `slack`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "[has(self.email), has(self.webhook), has(self.slack)].filter(x, x).size() == 1", "message": "a contact point needs exactly one of email, webhook or slack"}
]))]
pub struct ContactPointSpec {
    /// Its name in Grafana (letters, digits, `-` and `_`).
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    /// Mail to these addresses (Grafana needs SMTP settings for it: `spec.alerts` does not set
    /// them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
    /// POST every notification as JSON to a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// Post to a Slack channel through an incoming-webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSpec>,
}

/// An email contact point.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EmailSpec {
    /// Recipients.
    #[schemars(length(min = 1, max = 50), inner(length(min = 3, max = 254)))]
    pub addresses: Vec<String>,
}

/// A webhook contact point.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The key of a Secret in the monitor's namespace holding the URL (it may carry a token);
    /// the Secret must carry the label `iot.operator.dev/allow-alerting: "true"`.
    pub url_secret: SecretKeyRef,
    /// The TCP port of that URL. The operator never reads the URL, and with network policies
    /// on Grafana may reach webhooks on this port only.
    #[serde(default = "default_webhook_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_webhook_port() -> i32 {
    443
}

/// A Slack contact point.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlackSpec {
    /// The key of a Secret in the monitor's namespace holding the incoming-webhook URL; the
    /// Secret must carry the label `iot.operator.dev/allow-alerting: "true"`.
    pub url_secret: SecretKeyRef,
    /// The channel, where the webhook may post to several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 80))]
    pub recipient: Option<String>,
}

/// A key of a Secret in the monitor's namespace. It is used only if the Secret carries the
/// label `iot.operator.dev/allow-alerting: "true"` (its owner's consent to Grafana sending its
/// value where the spec says).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in its data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The SMTP server of Grafana's email notifications.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SmtpSpec {
    /// `host:port` of the server, such as `smtp.example.org:587` (STARTTLS where it offers it).
    #[schemars(length(min = 3, max = 253), pattern(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$"))]
    pub host: String,
    /// The sender address of the notifications.
    #[schemars(length(min = 3, max = 254))]
    pub from_address: String,
    /// A Secret in the monitor's namespace with the server's user and password; none for a
    /// relay that needs no login. It is used only if it carries the label
    /// `iot.operator.dev/allow-alerting: "true"` (its owner's consent to Grafana sending the
    /// login to `host`); the annotation `iot.operator.dev/smtp-host` on it, if set, is the only
    /// `host` it may be sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// The key of the user in `credentialsSecret`.
    #[serde(default = "default_user_key")]
    #[schemars(length(min = 1, max = 253))]
    pub user_key: String,
    /// The key of the password in `credentialsSecret`.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_user_key() -> String {
    "username".into()
}

fn default_password_key() -> String {
    "password".into()
}
