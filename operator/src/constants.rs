//! Fixed facts of the stack, in one place: ports, images and the users images run as. The
//! CRD's defaults, the validate step, the desired builders and the status all read them here.

/// Version of the workload images deployed by default: the operator and the workloads are
/// released together.
pub const WORKLOAD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the default workload images live: `<repository>/<workload>:<WORKLOAD_VERSION>`.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/iot-operator";

/// Image names of our own workloads under [`IMAGE_REPOSITORY`].
pub const COAP_SERVER_IMAGE: &str = "coap-server";
pub const SENSOR_SIM_IMAGE: &str = "sensor-sim";
pub const AQI_INGESTOR_IMAGE: &str = "aqi-ingestor";
pub const BACKUP_IMAGE: &str = "iot-backup";

/// InfluxDB's RPC port, which `influxd backup` and `influxd restore` speak to. It has no
/// authentication: it is opened (bound beyond 127.0.0.1) only with backups or a restore, and
/// the NetworkPolicy admits only the backup and restore pods.
pub const INFLUX_RPC_PORT: i32 = 8088;

/// Default images of the third-party components: supported releases with no known critical CVE
/// when chosen (docs/images.md says which and why). InfluxDB 1.13 is the current 1.x line (1.8
/// is end of life); Grafana 12.4.4 is outside CVE-2024-1313's range and has the fixes of its
/// 2026 security releases.
pub const DEFAULT_INFLUXDB_IMAGE: &str = "influxdb:1.13.1";
pub const DEFAULT_GRAFANA_IMAGE: &str = "grafana/grafana:12.4.4";

/// Longest `metadata.name` accepted: child names append up to 13 characters (`-aqi-ingestor`)
/// and the StatefulSet's pod name adds a controller-revision label that must stay below 63.
/// The CRD's CEL rule says the same number.
pub const MAX_NAME_LEN: usize = 40;

/// Port every workload serves `/metrics`, `/healthz` and `/readyz` on.
pub const WORKLOAD_HTTP_PORT: i32 = 9090;
/// Port of the InfluxDB HTTP API.
pub const INFLUX_PORT: i32 = 8086;
/// Port of Grafana's HTTP server.
pub const GRAFANA_PORT: i32 = 3000;
/// UDP port the CoAP server binds in its container, and the Service's default port (IANA's).
pub const COAP_PORT: i32 = 5683;
/// UDP port of CoAP over DTLS (`coaps://`, RFC 7252 §12.7), in the container and on the Service.
pub const COAPS_PORT: i32 = 5684;

/// UID of the `nonroot` user our workload images run as (images/images.conf).
pub const WORKLOAD_UID: i64 = 65532;
/// The official Grafana image's `grafana` user.
pub const GRAFANA_UID: i64 = 472;
/// The official InfluxDB image's `influxdb` user.
pub const INFLUX_UID: i64 = 1000;

/// Label a Secret must carry, with the value [`OPT_IN_VALUE`], before an IotMonitor may use it
/// as `spec.influxdb.external.credentialsSecret`: the workloads send those values to the URL the
/// spec names, so whoever may write IotMonitors but not read Secrets could otherwise read any
/// Secret of the namespace by naming it. The Secret's owner opts in, not the spec's author.
pub const EXTERNAL_CREDENTIALS_LABEL: &str = "iot.operator.dev/allow-external-influxdb";
/// Optional annotation on such a Secret: the one `spec.influxdb.external.url` it may be sent to.
pub const EXTERNAL_URL_ANNOTATION: &str = "iot.operator.dev/external-influxdb-url";
/// Label a Secret must carry, with the value [`OPT_IN_VALUE`], before `spec.alerts` may use it
/// (a contact point's `urlSecret`, `alerts.smtp.credentialsSecret`): Grafana sends those values
/// to the webhook, Slack URL or mail server the spec names, so the same rule holds. A label of
/// its own, not the external InfluxDB one: agreeing that a credential goes to an InfluxDB is not
/// agreeing that it goes to any mail server or webhook.
pub const ALERTING_SECRET_LABEL: &str = "iot.operator.dev/allow-alerting";
/// Optional annotation on the Secret of `spec.alerts.smtp.credentialsSecret`: the one
/// `host:port` the mail login may be sent to. (A webhook's or Slack's URL is itself in its
/// Secret, so its owner already chose where it goes.)
pub const SMTP_HOST_ANNOTATION: &str = "iot.operator.dev/smtp-host";
/// Label a Secret must carry, with the value [`OPT_IN_VALUE`], before
/// `spec.influxdb.backup.destination.s3.credentialsSecret` may name it: the backup pods send its
/// keys to the endpoint the spec names, so the same rule holds, with a label of its own.
pub const BACKUP_SECRET_LABEL: &str = "iot.operator.dev/allow-backup";
/// The value of [`EXTERNAL_CREDENTIALS_LABEL`], [`ALERTING_SECRET_LABEL`] and
/// [`BACKUP_SECRET_LABEL`] that opts in.
pub const OPT_IN_VALUE: &str = "true";

/// The one field manager of every write the operator makes (children and status).
pub const FIELD_MANAGER: &str = "iot-operator";

/// The label that hands a ConfigMap of Grafana alert rules to a monitor: its value is the
/// monitor's name (docs/alerts.md).
pub const ALERT_RULES_LABEL: &str = "iot.operator.dev/alert-rules";

/// The uids of the provisioned InfluxDB datasources; the dashboards and alert rules name them.
pub const DHT_DATASOURCE_UID: &str = "iot-dht";
pub const AQI_DATASOURCE_UID: &str = "iot-aqi";
