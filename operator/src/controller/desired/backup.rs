//! Backups and the restore (pure): the backup volume, the CronJob whose pods run
//! `influxd backup -portable` against InfluxDB's RPC port and store the result with iot-backup,
//! and the one-shot restore Job (iot-backup fetches, `influxd restore -portable` restores).
//! docs/operations.md is the runbook.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodTemplateSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels::{Component, owned_meta, unowned_meta};
use super::pod::{container_security, env, env_from_secret, resources, scratch};
use super::secrets::{KEY_INFLUX_ADMIN_PASSWORD, KEY_INFLUX_ADMIN_USERNAME};
use super::template::PodTemplateBuilder;
use crate::constants::{INFLUX_PORT, INFLUX_RPC_PORT, INFLUX_UID};
use crate::controller::validate::{BackupTarget, InternalInflux, ValidatedMonitor};
use crate::crd::ResourcesSpec;

/// The restore script, run by the restore Job with the InfluxDB image; it lives in the setup
/// ConfigMap beside the set-up script.
pub const RESTORE_SCRIPT: &str = include_str!("influxdb-restore.sh");
pub const RESTORE_KEY: &str = "restore.sh";

const WORK_DIR: &str = "/work";
const BACKUPS_DIR: &str = "/backups";

/// The CPU limit of `influxd backup` (docs/benchmarks.md: 250m held the write path's p99 at
/// 1.3–1.4× of its own on 2 shared cores; 500m reached 2.2× under load).
pub const BACKUP_CPU_LIMIT: &str = "250m";

/// Kept runs of the CronJob, each kind: enough to read why the last ones failed.
const HISTORY: i32 = 3;

/// The backup objects of a monitor; empty without `backup` and `restoreFrom`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackupObjects {
    /// The backup volume: kept when the IotMonitor is deleted, like the data.
    pub volume: Option<PersistentVolumeClaim>,
    pub cron_job: Option<CronJob>,
    /// Created once, never patched (a Job's template cannot change).
    pub restore_job: Option<Job>,
}

pub fn build(model: &ValidatedMonitor) -> BackupObjects {
    let crate::controller::validate::InfluxMode::Internal(internal) = &model.influx.mode else {
        return BackupObjects::default();
    };
    let targets = model
        .backup
        .iter()
        .map(|b| &b.target)
        .chain(model.restore.iter().map(|r| &r.target));
    let volume = targets
        .filter_map(|t| t.as_ref().ok())
        .find_map(|t| match t {
            BackupTarget::Volume {
                claim,
                size,
                storage_class_name,
            } => Some(backup_volume(
                model,
                claim,
                size,
                storage_class_name.clone(),
            )),
            BackupTarget::S3 { .. } => None,
        });
    BackupObjects {
        volume,
        cron_job: cron_job(model, internal),
        restore_job: restore_job(model, internal),
    }
}

/// The backups' volume outlives the IotMonitor whatever `deleteWithMonitor` says: backups are
/// what is left when the data is gone.
fn backup_volume(
    model: &ValidatedMonitor,
    claim: &str,
    size: &str,
    storage_class_name: Option<String>,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: unowned_meta(model, claim, Component::Backup),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(size.to_owned()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// `host:port` of InfluxDB's RPC port through the headless Service, which lists the pod also
/// while it is not Ready (a restore runs before it is).
pub fn rpc_host(model: &ValidatedMonitor) -> String {
    format!("{}:{INFLUX_RPC_PORT}", influx_host(model))
}

fn influx_host(model: &ValidatedMonitor) -> String {
    format!("{}.{}.svc", model.names.influxdb_headless, model.namespace)
}

fn small() -> ResourcesSpec {
    ResourcesSpec {
        cpu_request: "10m".into(),
        memory_request: "32Mi".into(),
        memory_limit: "256Mi".into(),
        cpu_limit: None,
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The destination as iot-backup's environment, and the volume it needs (the backup volume).
fn destination(
    target: &BackupTarget,
    read_only: bool,
) -> (Vec<EnvVar>, Vec<Volume>, Vec<VolumeMount>) {
    match target {
        BackupTarget::Volume { claim, .. } => (
            vec![env("BACKUP_DIR", BACKUPS_DIR)],
            vec![Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: read_only.then_some(true),
                }),
                ..Volume::default()
            }],
            vec![mount("backups", BACKUPS_DIR, read_only)],
        ),
        BackupTarget::S3 {
            endpoint,
            bucket,
            prefix,
            region,
            credentials,
        } => (
            vec![
                env("S3_ENDPOINT", endpoint.clone()),
                env("S3_BUCKET", bucket.clone()),
                env("S3_PREFIX", prefix.clone()),
                env("S3_REGION", region.clone()),
                env("S3_CREDENTIALS_SECRET", credentials.secret.clone()),
                env_from_secret(
                    "AWS_ACCESS_KEY_ID",
                    &credentials.secret,
                    &credentials.username_key,
                ),
                env_from_secret(
                    "AWS_SECRET_ACCESS_KEY",
                    &credentials.secret,
                    &credentials.password_key,
                ),
            ],
            Vec::new(),
            Vec::new(),
        ),
    }
}

/// A Job's pod template: the component's labels and the `restricted` context as every pod of
/// the stack has them, InfluxDB's scheduling (the backup volume is ReadWriteOnce, like the
/// data's), run once.
fn job_pod(
    model: &ValidatedMonitor,
    internal: &InternalInflux,
    component: Component,
    init: Container,
    main: Container,
    volumes: Vec<Volume>,
) -> PodTemplateSpec {
    // As InfluxDB's user: the InfluxDB image's tools run as it, and the backup volume is
    // made writable for its group.
    let mut pod = PodTemplateBuilder::new(
        model,
        component,
        INFLUX_UID,
        &internal.scheduling,
        vec![main],
    )
    .volumes(volumes)
    .build()
    .template;
    if let Some(spec) = &mut pod.spec {
        spec.init_containers = Some(vec![init]);
        spec.restart_policy = Some("Never".into());
    }
    pod
}

fn cron_job(model: &ValidatedMonitor, internal: &InternalInflux) -> Option<CronJob> {
    let backup = model.backup.as_ref()?;
    let target = backup.target.as_ref().ok()?;
    let names = &model.names;
    let (work_volume, work_mount) = scratch("work", WORK_DIR);
    let data = format!("{WORK_DIR}/data");
    // One directory per database: the restore takes them one by one, and InfluxDB's own
    // `_internal` statistics are not backed up.
    let dump = Container {
        name: "influxd-backup".into(),
        image: Some(internal.image.clone()),
        command: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            "set -eu; for db in $INFLUX_DATABASES; do influxd backup -portable -db \"$db\" -host \"$INFLUX_RPC\" \"$BACKUP_SOURCE/$db\"; done".into(),
        ]),
        env: Some(vec![
            env("INFLUX_DATABASES", format!("{} {}", model.influx.dht_db, model.influx.aqi_db)),
            env("INFLUX_RPC", rpc_host(model)),
            env("BACKUP_SOURCE", data.clone()),
        ]),
        // The influxd backup client gzips every shard it receives, competing with InfluxDB's
        // writes for the CPU; a limit keeps the write path's p99 within 2× of its own
        // (docs/benchmarks.md, "Backup and restore"), at the cost of a slower backup.
        resources: Some(resources(&ResourcesSpec {
            cpu_limit: Some(BACKUP_CPU_LIMIT.into()),
            ..small()
        })),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![work_mount.clone()]),
        // influxd says why it failed in its log: the kubelet keeps the tail as the message.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let (mut store_env, mut volumes, mut mounts) = destination(target, false);
    store_env.extend([
        env("BACKUP_SOURCE", data),
        env("BACKUP_WORK", WORK_DIR),
        env("MONITOR", names.instance.clone()),
        env("BACKUP_KEEP", backup.keep.to_string()),
        env("LOG_FORMAT", "json"),
    ]);
    mounts.push(work_mount);
    volumes.push(work_volume);
    let store = Container {
        name: "store".into(),
        image: Some(backup.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["store".into()]),
        env: Some(store_env),
        resources: Some(resources(&small())),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let pod = job_pod(model, internal, Component::Backup, dump, store, volumes);
    let meta = owned_meta(model, &names.backup, Component::Backup);
    Some(CronJob {
        spec: CronJobSpec {
            schedule: backup.schedule.clone(),
            // While a restore runs: a backup then would store a half-restored database.
            suspend: model
                .restore
                .as_ref()
                .is_some_and(|r| !r.finished)
                .then_some(true),
            concurrency_policy: Some("Forbid".into()),
            // A run missed by more than this (the controller was down) waits for the next.
            starting_deadline_seconds: Some(300),
            successful_jobs_history_limit: Some(HISTORY),
            failed_jobs_history_limit: Some(HISTORY),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: meta.labels.clone(),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    // One try per run: a failure is reported as it is, the next run tries again.
                    backoff_limit: Some(0),
                    template: pod,
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        },
        metadata: meta,
        ..CronJob::default()
    })
}

fn restore_job(model: &ValidatedMonitor, internal: &InternalInflux) -> Option<Job> {
    let restore = model.restore.as_ref()?;
    let target = restore.target.as_ref().ok()?;
    let names = &model.names;
    let influx = &model.influx;
    let secret = &names.credentials;
    let (restore_volume, restore_mount) = scratch("restore", "/restore");
    let (tmp_volume, tmp_mount) = scratch("tmp", "/tmp");
    let (mut fetch_env, mut volumes, mut fetch_mounts) = destination(target, true);
    fetch_env.extend([
        env("RESTORE_BACKUP", restore.requested.clone()),
        env("RESTORE_INTO", "/restore"),
        env("MONITOR", names.instance.clone()),
        env("LOG_FORMAT", "json"),
    ]);
    fetch_mounts.push(restore_mount.clone());
    let fetch = Container {
        name: "fetch".into(),
        image: Some(restore.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec!["fetch".into()]),
        env: Some(fetch_env),
        resources: Some(resources(&small())),
        security_context: Some(container_security()),
        volume_mounts: Some(fetch_mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    let run = Container {
        name: "restore".into(),
        image: Some(internal.image.clone()),
        command: Some(vec!["/bin/sh".into(), format!("/scripts/{RESTORE_KEY}")]),
        env: Some(vec![
            env("INFLUX_HOST", influx_host(model)),
            env("INFLUX_PORT", INFLUX_PORT.to_string()),
            env("INFLUX_RPC_PORT", INFLUX_RPC_PORT.to_string()),
            env_from_secret("INFLUX_ADMIN_USER", secret, KEY_INFLUX_ADMIN_USERNAME),
            env_from_secret("INFLUX_ADMIN_PASSWORD", secret, KEY_INFLUX_ADMIN_PASSWORD),
            env_from_secret("INFLUX_WRITER_USER", secret, &influx.writer.username_key),
            env_from_secret("INFLUX_READER_USER", secret, &influx.reader.username_key),
            env(
                "INFLUX_DATABASES",
                format!("{} {}", influx.dht_db, influx.aqi_db),
            ),
            env("RESTORE_DIR", "/restore"),
            // The influx CLI keeps its history in $HOME.
            env("HOME", "/tmp"),
        ]),
        resources: Some(resources(&small())),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            restore_mount,
            tmp_mount,
            mount("scripts", "/scripts", true),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    volumes.extend([
        restore_volume,
        tmp_volume,
        Volume {
            name: "scripts".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.influxdb_setup.clone(),
                default_mode: Some(0o555),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]);
    let pod = job_pod(model, internal, Component::Restore, fetch, run, volumes);
    Some(Job {
        metadata: owned_meta(model, &restore.job, Component::Restore),
        spec: Some(JobSpec {
            // An interrupted restore runs again (it is idempotent); one refused, again refused.
            backoff_limit: Some(2),
            template: pod,
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}
