//! InfluxDB 1.x: a one-replica StatefulSet with HTTP authentication, its data volume, Services
//! and the setup sidecar that creates users, databases, retention and downsampling tiers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Probe, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::backup::{RESTORE_KEY, RESTORE_SCRIPT};
use super::influxdb_plan;
use super::labels::{Component, owned_meta, selector, unowned_meta};
use super::pod::{
    container_security, env, env_from_secret, http_probe, resources, scratch, tcp_port,
};
use super::secrets::{KEY_INFLUX_ADMIN_PASSWORD, KEY_INFLUX_ADMIN_USERNAME};
use super::template::PodTemplateBuilder;
use crate::constants::{INFLUX_PORT, INFLUX_RPC_PORT, INFLUX_UID};
use crate::controller::hash::content_hash;
use crate::controller::validate::{InternalInflux, ValidatedMonitor};

/// The idempotent setup script run by the sidecar; tested against a real influxd.
pub const SETUP_SCRIPT: &str = include_str!("influxdb-setup.sh");
const SETUP_KEY: &str = "setup.sh";
/// The sidecar's plan ([`influxdb_plan::plan`]). Not part of the pod's config hash: the sidecar
/// re-reads the mounted file and applies a change while InfluxDB keeps running.
pub const PLAN_KEY: &str = "plan";
const SETUP_DONE: &str = "/tmp/setup-done";
const DATA_DIR: &str = "/var/lib/influxdb";

/// The InfluxDB children, or nothing with an external InfluxDB.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InfluxObjects {
    pub setup: Option<ConfigMap>,
    pub data: Option<PersistentVolumeClaim>,
    pub service: Option<Service>,
    pub headless: Option<Service>,
    pub stateful_set: Option<StatefulSet>,
}

pub fn build(model: &ValidatedMonitor) -> InfluxObjects {
    match &model.influx.mode {
        crate::controller::validate::InfluxMode::External => InfluxObjects::default(),
        crate::controller::validate::InfluxMode::Internal(internal) => InfluxObjects {
            setup: Some(setup_config_map(model, internal)),
            data: Some(data_claim(model, internal)),
            service: Some(service(model, false)),
            headless: Some(headless(model)),
            stateful_set: Some(stateful_set(model, internal)),
        },
    }
}

fn setup_config_map(model: &ValidatedMonitor, internal: &InternalInflux) -> ConfigMap {
    let mut data = BTreeMap::from([
        (SETUP_KEY.to_owned(), SETUP_SCRIPT.to_owned()),
        (
            PLAN_KEY.to_owned(),
            influxdb_plan::plan(&model.influx, &internal.retention),
        ),
    ]);
    if model.restore.is_some() {
        data.insert(RESTORE_KEY.to_owned(), RESTORE_SCRIPT.to_owned());
    }
    ConfigMap {
        metadata: owned_meta(model, &model.names.influxdb_setup, Component::Influxdb),
        data: Some(data),
        ..ConfigMap::default()
    }
}

/// Backups or a restore speak to InfluxDB's RPC port, which then listens beyond 127.0.0.1.
fn rpc_open(model: &ValidatedMonitor) -> bool {
    model.backup.is_some() || model.restore.is_some()
}

/// The StatefulSet's headless Service; with backups or a restore it also names the RPC port
/// and lists the pod while it is not Ready (a restore runs before it is).
fn headless(model: &ValidatedMonitor) -> Service {
    let mut service = service(model, true);
    if rpc_open(model)
        && let Some(spec) = &mut service.spec
    {
        spec.publish_not_ready_addresses = Some(true);
        spec.ports.get_or_insert_with(Vec::new).push(ServicePort {
            name: Some("rpc".into()),
            port: INFLUX_RPC_PORT,
            target_port: Some(IntOrString::Int(INFLUX_RPC_PORT)),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        });
    }
    service
}

/// A standalone claim rather than a volumeClaimTemplate: templates are immutable, so a
/// standalone claim is what lets `storage.size` grow, and it survives the IotMonitor unless
/// the spec asks otherwise (then the owner reference lets the garbage collector remove it).
fn data_claim(model: &ValidatedMonitor, internal: &InternalInflux) -> PersistentVolumeClaim {
    let name = &model.names.influxdb_data;
    let metadata = if internal.delete_with_monitor {
        owned_meta(model, name, Component::Influxdb)
    } else {
        unowned_meta(model, name, Component::Influxdb)
    };
    PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: internal.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(internal.storage_size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn service(model: &ValidatedMonitor, headless: bool) -> Service {
    let name = if headless {
        &model.names.influxdb_headless
    } else {
        &model.names.influxdb
    };
    Service {
        metadata: owned_meta(model, name, Component::Influxdb),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: headless.then(|| "None".to_owned()),
            selector: Some(selector(model, Component::Influxdb)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: INFLUX_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn stateful_set(model: &ValidatedMonitor, internal: &InternalInflux) -> StatefulSet {
    let names = &model.names;
    let secret = &names.credentials;
    let influx = &model.influx;
    let (tmp_volume, tmp_mount) = scratch("tmp", "/tmp");
    let data_mount = VolumeMount {
        name: "data".into(),
        mount_path: DATA_DIR.into(),
        ..VolumeMount::default()
    };
    let mut influxd_env = vec![
        env("INFLUXDB_HTTP_AUTH_ENABLED", "true"),
        env("INFLUXDB_REPORTING_DISABLED", "true"),
        env("INFLUXDB_HTTP_BIND_ADDRESS", format!(":{INFLUX_PORT}")),
        env("INFLUXDB_META_DIR", format!("{DATA_DIR}/meta")),
        env("INFLUXDB_DATA_DIR", format!("{DATA_DIR}/data")),
        env("INFLUXDB_DATA_WAL_DIR", format!("{DATA_DIR}/wal")),
        env(
            "INFLUXDB_DATA_MAX_SERIES_PER_DATABASE",
            internal.limits.max_series_per_database.to_string(),
        ),
        env(
            "INFLUXDB_DATA_MAX_VALUES_PER_TAG",
            internal.limits.max_values_per_tag.to_string(),
        ),
    ];
    if rpc_open(model) {
        // Unauthenticated: only the backup and restore pods may reach it (NetworkPolicy).
        influxd_env.push(env("INFLUXDB_BIND_ADDRESS", format!(":{INFLUX_RPC_PORT}")));
    }
    let influxd = Container {
        name: "influxdb".into(),
        image: Some(internal.image.clone()),
        // Bypass the image's first-boot init: the sidecar below owns users and databases, on
        // every start rather than only on an empty volume.
        command: Some(vec!["influxd".into()]),
        env: Some(influxd_env),
        ports: Some(vec![tcp_port("http", INFLUX_PORT)]),
        resources: Some(resources(&internal.resources)),
        security_context: Some(container_security()),
        // /ping answers 204 without credentials.
        readiness_probe: Some(http_probe("/ping", "http", 5, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            ..http_probe("/ping", "http", 10, 6)
        }),
        volume_mounts: Some(vec![data_mount, tmp_mount.clone()]),
        // influxd writes why it stopped to its log, not to a termination file: the kubelet then
        // keeps the log's tail, which the operator puts in the status (`diagnose`).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let mut setup_env = vec![
        env("INFLUX_PORT", INFLUX_PORT.to_string()),
        env_from_secret("INFLUX_ADMIN_USER", secret, KEY_INFLUX_ADMIN_USERNAME),
        env_from_secret("INFLUX_ADMIN_PASSWORD", secret, KEY_INFLUX_ADMIN_PASSWORD),
        env_from_secret("INFLUX_WRITER_USER", secret, &influx.writer.username_key),
        env_from_secret(
            "INFLUX_WRITER_PASSWORD",
            secret,
            &influx.writer.password_key,
        ),
        env_from_secret("INFLUX_READER_USER", secret, &influx.reader.username_key),
        env_from_secret(
            "INFLUX_READER_PASSWORD",
            secret,
            &influx.reader.password_key,
        ),
        env("SETUP_PLAN", format!("/setup/{PLAN_KEY}")),
        env("SETUP_DONE_FILE", SETUP_DONE),
    ];
    if let Some(restore) = &model.restore {
        // The set-up leaves the databases to the restore (influxdb-setup.sh).
        setup_env.push(env("INFLUX_RESTORE", restore.requested.clone()));
    }
    let setup = Container {
        name: "setup".into(),
        image: Some(internal.image.clone()),
        command: Some(vec!["/bin/sh".into(), format!("/setup/{SETUP_KEY}")]),
        env: Some(setup_env),
        resources: Some(resources(&crate::crd::ResourcesSpec {
            cpu_request: "10m".into(),
            memory_request: "16Mi".into(),
            memory_limit: "64Mi".into(),
            cpu_limit: None,
        })),
        security_context: Some(container_security()),
        // The pod is Ready only once the users exist, so workloads never see auth failures
        // caused by a half-initialised database.
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["test".into(), "-f".into(), SETUP_DONE.into()]),
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "setup".into(),
                mount_path: "/setup".into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            tmp_mount,
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.influxdb_data.clone(),
                read_only: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: "setup".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.influxdb_setup.clone(),
                default_mode: Some(0o555),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        tmp_volume,
    ];
    let pods = PodTemplateBuilder::new(
        model,
        Component::Influxdb,
        INFLUX_UID,
        &internal.scheduling,
        vec![influxd, setup],
    )
    .volumes(volumes)
    .config_hash(content_hash([SETUP_SCRIPT]))
    .termination_grace_period_seconds(30)
    .build();
    StatefulSet {
        metadata: owned_meta(model, &names.influxdb, Component::Influxdb),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names.influxdb_headless.clone()),
            selector: pods.selector,
            template: pods.template,
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}
