//! `spec.influxdb.backup` and `restoreFrom` resolved: where backups go, which image packs them,
//! and whether the S3 keys' Secret may be used. A Secret that does not opt in (or lacks a key)
//! does not fail the reconcile: the rest of the stack is built, no backup pod is, and the
//! `BackupFailing` condition says what to add.

use super::model::{Backup, BackupTarget, Names, Restore, SecretCredentials};
use crate::constants::{BACKUP_IMAGE, BACKUP_SECRET_LABEL, OPT_IN_VALUE};
use crate::controller::dereference::{Dereferenced, ReferencedSecret};
use crate::controller::hash::content_hash;
use crate::crd::{BackupSpec, InfluxDbSpec};

/// Why backups cannot run, with what to do: the reason and message of `BackupFailing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

/// The backups and the restore of `spec`; both `None` with an external InfluxDB (the CRD
/// refuses the combination; an older CRD's object is treated as asking for neither).
pub(super) fn resolve(
    spec: &InfluxDbSpec,
    names: &Names,
    namespace: &str,
    refs: &Dereferenced,
    image_or_default: impl Fn(Option<&str>, &str) -> String,
) -> (Option<Backup>, Option<Restore>) {
    if spec.external.is_some() {
        return (None, None);
    }
    let image = image_or_default(
        spec.backup.as_ref().and_then(|b| b.image.as_deref()),
        BACKUP_IMAGE,
    );
    let target = target(spec.backup.as_ref(), names, namespace, refs);
    let backup = spec.backup.as_ref().map(|b| Backup {
        schedule: b.schedule.clone(),
        keep: b.keep,
        image: image.clone(),
        target: target.clone(),
    });
    let restore = spec.restore_from.as_ref().map(|r| Restore {
        requested: r.backup.clone(),
        // A new name for another backup asked for: a Job's template cannot change.
        job: format!(
            "{}-restore-{}",
            names.instance,
            &content_hash([r.backup.as_str()])[..6]
        ),
        image,
        target,
        finished: false,
    });
    (backup, restore)
}

/// Where backups are (and a restore reads from): the backup volume unless `s3` is given.
fn target(
    backup: Option<&BackupSpec>,
    names: &Names,
    namespace: &str,
    refs: &Dereferenced,
) -> Result<BackupTarget, Blocked> {
    let destination = backup.map(|b| &b.destination);
    let Some(s3) = destination.and_then(|d| d.s3.as_ref()) else {
        let volume = destination
            .and_then(|d| d.volume.clone())
            .unwrap_or_default();
        return Ok(BackupTarget::Volume {
            claim: names.backups.clone(),
            size: volume.size,
            storage_class_name: volume.storage_class_name,
        });
    };
    let secret = &s3.credentials_secret;
    let keys = match &refs.backup_credentials {
        Some(ReferencedSecret::OptedIn { keys, .. }) => keys,
        Some(ReferencedSecret::NotOptedIn) => {
            return Err(Blocked {
                reason: "CredentialsNotAllowed",
                message: format!(
                    "Secret {secret} does not allow its use for backups, so no backup pod gets it (they would send its keys to {}); if it is meant for that, its owner opts in: kubectl label secret {secret} -n {namespace} {BACKUP_SECRET_LABEL}={OPT_IN_VALUE}",
                    s3.endpoint
                ),
            });
        }
        Some(ReferencedSecret::Missing) | None => {
            return Err(Blocked {
                reason: "MissingCredentials",
                message: format!(
                    "Secret {secret} with the S3 keys does not exist; create it (keys {} and {}) or fix spec.influxdb.backup.destination.s3.credentialsSecret",
                    s3.access_key_id_key, s3.secret_access_key_key
                ),
            });
        }
    };
    let missing: Vec<&str> = [&s3.access_key_id_key, &s3.secret_access_key_key]
        .into_iter()
        .filter(|k| !keys.contains(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Blocked {
            reason: "MissingCredentials",
            message: format!(
                "Secret {secret} lacks the key(s) {}: add them (kubectl edit secret {secret} -n {namespace}), or name the keys that hold them in destination.s3",
                missing.join(", ")
            ),
        });
    }
    Ok(BackupTarget::S3 {
        endpoint: s3.endpoint.trim_end_matches('/').to_owned(),
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone().unwrap_or_default(),
        region: s3.region.clone(),
        credentials: SecretCredentials {
            secret: secret.clone(),
            username_key: s3.access_key_id_key.clone(),
            password_key: s3.secret_access_key_key.clone(),
        },
    })
}
