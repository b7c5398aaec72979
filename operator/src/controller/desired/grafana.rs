//! Grafana: a Deployment (stateless: everything is provisioned from ConfigMaps, so replicas are
//! identical and survive restarts), its Service, the datasource provisioning and dashboards.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, KeyToPath, Probe, Service, Volume, VolumeMount,
};
use serde_json::json;

use super::alerts;
use super::labels::{Component, owned_meta};
use super::network::{exposed_service, service_port};
use super::pod::{
    container_security, env, env_from_secret, http_probe, resources, scratch, tcp_port,
};
use super::secrets::{KEY_GRAFANA_ADMIN_PASSWORD, KEY_GRAFANA_ADMIN_USERNAME};
use super::template::PodTemplateBuilder;
use super::workload::{Rollout, deployment};
use crate::constants::{GRAFANA_PORT, GRAFANA_UID};
use crate::controller::hash::content_hash;
use crate::controller::validate::{InfluxMode, ValidatedMonitor};

/// Dashboards shipped with the operator. Their datasource uids match `DHT_DATASOURCE_UID` and
/// `AQI_DATASOURCE_UID`.
pub const DHT_DASHBOARD: &str = include_str!("../../../dashboards/dht.json");
pub const AQI_DASHBOARD: &str = include_str!("../../../dashboards/aqi.json");
pub use crate::constants::{AQI_DATASOURCE_UID, DHT_DATASOURCE_UID};

const PROVISIONING: &str = "/etc/grafana/provisioning";
const DASHBOARDS_DIR: &str = "/etc/grafana/dashboards/iot";

#[derive(Debug, Clone, PartialEq)]
pub struct GrafanaObjects {
    pub provisioning: ConfigMap,
    pub dashboards: ConfigMap,
    /// Alert rules, contact points and policy; `None` with alerting off.
    pub alerting: Option<ConfigMap>,
    pub service: Service,
    pub deployment: Deployment,
}

pub fn build(model: &ValidatedMonitor) -> GrafanaObjects {
    let provisioning = provisioning_config_map(model);
    let dashboards = dashboards_config_map(model);
    let alerting = alerts::config_map(model);
    // Grafana reads provisioning files at start only: a changed file must roll the pods.
    let hash = content_hash(
        [Some(&provisioning), Some(&dashboards), alerting.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|cm| cm.data.iter().flat_map(|d| d.values()))
            .map(String::as_str),
    );
    let mut service = exposed_service(
        model,
        &model.names.grafana,
        Component::Grafana,
        model.grafana.service_type,
        vec![service_port(
            ("http", "TCP", GRAFANA_PORT),
            model.grafana.node_port,
        )],
    );
    // Each replica keeps its sessions in its own SQLite: a logged-in user must keep reaching the
    // same replica when the HPA adds or removes one (anonymous viewers need nothing).
    if let Some(spec) = service.spec.as_mut() {
        spec.session_affinity = Some("ClientIP".into());
    }
    GrafanaObjects {
        service,
        deployment: grafana_deployment(model, &hash),
        provisioning,
        dashboards,
        alerting,
    }
}

/// The datasource password is `$INFLUX_READ_PASSWORD`: Grafana expands it from the pod's
/// environment, which takes it from the Secret, so no credential is ever in a ConfigMap.
fn datasources_yaml(model: &ValidatedMonitor) -> String {
    let influx = &model.influx;
    let datasource = |name: &str, uid: &str, db: &str, default: bool| {
        json!({
            "name": name,
            "uid": uid,
            "type": "influxdb",
            "access": "proxy",
            "url": influx.url,
            "isDefault": default,
            "editable": false,
            "database": db,
            "user": "$INFLUX_READ_USER",
            "jsonData": {"dbName": db, "httpMode": "GET"},
            "secureJsonData": {"password": "$INFLUX_READ_PASSWORD"},
        })
    };
    let doc = json!({
        "apiVersion": 1,
        "datasources": [
            datasource("InfluxDB DHT", DHT_DATASOURCE_UID, &influx.dht_db, true),
            datasource("InfluxDB AQI", AQI_DATASOURCE_UID, &influx.aqi_db, false),
        ],
    });
    to_yaml(&doc)
}

fn dashboard_provider_yaml() -> String {
    to_yaml(&json!({
        "apiVersion": 1,
        "providers": [{
            "name": "iot",
            "orgId": 1,
            "folder": "IoT",
            "type": "file",
            "disableDeletion": true,
            "allowUiUpdates": false,
            "updateIntervalSeconds": 30,
            "options": {"path": DASHBOARDS_DIR, "foldersFromFilesStructure": false},
        }],
    }))
}

fn to_yaml(value: &serde_json::Value) -> String {
    // A serde_json::Value always serializes to YAML; an empty document would only make
    // Grafana log a provisioning error, never crash the operator.
    serde_yaml::to_string(value).unwrap_or_default()
}

fn provisioning_config_map(model: &ValidatedMonitor) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(model, &model.names.grafana_datasources, Component::Grafana),
        data: Some(BTreeMap::from([
            ("datasources.yaml".to_owned(), datasources_yaml(model)),
            ("dashboards.yaml".to_owned(), dashboard_provider_yaml()),
        ])),
        ..ConfigMap::default()
    }
}

/// The variable of the shipped dashboards that picks the retention policy for the time range,
/// from the table the InfluxDB setup keeps (`influxdb_plan::tier_table`).
const TIER_VARIABLE: &str = "tier";

/// A shipped dashboard as this monitor serves it. With `tiers` (the operator's InfluxDB, whose
/// setup keeps the tier table) as shipped; otherwise (an external InfluxDB) without the tier
/// variable, its charts reading the database's default retention policy.
pub(crate) fn dashboard(shipped: &str, tiers: bool) -> String {
    if tiers {
        return shipped.to_owned();
    }
    let Ok(mut d) = serde_json::from_str::<serde_json::Value>(shipped) else {
        // The shipped files are JSON (a unit test parses them): unreachable.
        return shipped.to_owned();
    };
    if let Some(vars) = d["templating"]["list"].as_array_mut() {
        vars.retain(|v| v["name"] != TIER_VARIABLE);
    }
    let from = format!("\"${TIER_VARIABLE}\".");
    for panel in d["panels"].as_array_mut().into_iter().flatten() {
        for target in panel["targets"].as_array_mut().into_iter().flatten() {
            if let Some(q) = target["query"].as_str() {
                target["query"] = q.replace(&from, "").into();
            }
        }
    }
    serde_json::to_string_pretty(&d).unwrap_or_else(|_| shipped.to_owned())
}

fn dashboards_config_map(model: &ValidatedMonitor) -> ConfigMap {
    let tiers = matches!(model.influx.mode, InfluxMode::Internal(_));
    ConfigMap {
        metadata: owned_meta(model, &model.names.grafana_dashboards, Component::Grafana),
        data: Some(BTreeMap::from([
            ("dht.json".to_owned(), dashboard(DHT_DASHBOARD, tiers)),
            ("aqi.json".to_owned(), dashboard(AQI_DASHBOARD, tiers)),
        ])),
        ..ConfigMap::default()
    }
}

fn config_volume(name: &str, config_map: &str, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            items,
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn item(key: &str) -> Vec<KeyToPath> {
    vec![KeyToPath {
        key: key.to_owned(),
        path: key.to_owned(),
        ..KeyToPath::default()
    }]
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn grafana_deployment(model: &ValidatedMonitor, config_hash: &str) -> Deployment {
    let names = &model.names;
    let grafana = &model.grafana;
    let reader = &model.influx.reader;
    let (data_volume, data_mount) = scratch("data", "/var/lib/grafana");
    let (tmp_volume, tmp_mount) = scratch("tmp", "/tmp");
    let mut container = Container {
        name: "grafana".into(),
        image: Some(grafana.image.clone()),
        ports: Some(vec![tcp_port("http", GRAFANA_PORT)]),
        env: Some(vec![
            env_from_secret(
                "GF_SECURITY_ADMIN_USER",
                &names.credentials,
                KEY_GRAFANA_ADMIN_USERNAME,
            ),
            env_from_secret(
                "GF_SECURITY_ADMIN_PASSWORD",
                &names.credentials,
                KEY_GRAFANA_ADMIN_PASSWORD,
            ),
            env_from_secret("INFLUX_READ_USER", &reader.secret, &reader.username_key),
            env_from_secret("INFLUX_READ_PASSWORD", &reader.secret, &reader.password_key),
            env(
                "GF_AUTH_ANONYMOUS_ENABLED",
                grafana.anonymous_viewer.to_string(),
            ),
            env("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer"),
            env("GF_USERS_ALLOW_SIGN_UP", "false"),
            env("GF_ANALYTICS_REPORTING_ENABLED", "false"),
            env("GF_ANALYTICS_CHECK_FOR_UPDATES", "false"),
            env("GF_LOG_MODE", "console"),
            env(
                "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
                format!("{DASHBOARDS_DIR}/dht.json"),
            ),
        ]),
        resources: Some(resources(&grafana.resources)),
        security_context: Some(container_security()),
        readiness_probe: Some(http_probe("/api/health", "http", 5, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            ..http_probe("/api/health", "http", 10, 6)
        }),
        volume_mounts: Some(vec![
            mount("datasources", &format!("{PROVISIONING}/datasources")),
            mount("providers", &format!("{PROVISIONING}/dashboards")),
            mount("dashboards", DASHBOARDS_DIR),
            data_mount,
            tmp_mount,
        ]),
        ..Container::default()
    };
    let mut volumes = vec![
        config_volume(
            "datasources",
            &names.grafana_datasources,
            Some(item("datasources.yaml")),
        ),
        config_volume(
            "providers",
            &names.grafana_datasources,
            Some(item("dashboards.yaml")),
        ),
        config_volume("dashboards", &names.grafana_dashboards, None),
        data_volume,
        tmp_volume,
    ];
    if let Some(alerting) = &model.alerts {
        // The contact points' URLs (the provisioning file's `$VAR`s) and the mail server.
        container
            .env
            .get_or_insert_default()
            .extend(alerts::env(alerting));
        let mounts = container.volume_mounts.get_or_insert_default();
        mounts.push(mount("alerting", alerts::ALERTING_DIR));
        volumes.push(config_volume("alerting", &names.grafana_alerting, None));
    }
    let pods = PodTemplateBuilder::new(
        model,
        Component::Grafana,
        GRAFANA_UID,
        &grafana.scheduling,
        vec![container],
    )
    .volumes(volumes)
    .config_hash(config_hash.to_owned())
    .build();
    // The HPA owns the replica count when autoscaling is on; setting it here too would make the
    // operator and the HPA fight.
    let replicas = model.autoscaling.is_none().then_some(grafana.replicas.min);
    deployment(
        model,
        &names.grafana,
        Component::Grafana,
        replicas,
        Rollout::Rolling,
        pods,
    )
}
