//! iot-backup: packs an InfluxDB portable backup (`influxd backup -portable`, made by the
//! backup pod's init container) into one `.tar.gz`, stores it in a directory or an S3 bucket,
//! deletes all but the newest `keep`, and fetches one back for a restore. Each run leaves a
//! one-line JSON result ([`iot_common::backup_result`]) as its container's termination message,
//! which the operator turns into `status.backup` (docs/operations.md).

mod archive;
pub mod destination;
pub mod names;
mod run;

pub use self::destination::Destination;
pub use self::run::{fetch, list, store};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no destination: give --dir or --s3-endpoint with --s3-bucket")]
    NoDestination,
    #[error("{what}: {source}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("InfluxDB's backup at {0} holds no file: the backup step wrote nothing")]
    EmptySource(String),
    #[error("cannot {op}: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: object_store::Error,
    },
    #[error("no backup of {monitor} in {place}")]
    NoBackup { monitor: String, place: String },
    #[error("no backup named {name} in {place}; there are: {available}")]
    UnknownBackup {
        name: String,
        place: String,
        available: String,
    },
}

impl BackupError {
    /// What to change, where the error says: the spec field or the Secret to fix.
    pub fn fix(&self, destination: &Destination) -> Option<String> {
        match self {
            Self::Store { source, .. } => destination.fix_for(source),
            Self::NoBackup { .. } => Some(
                "take one first (kubectl create job --from=cronjob/<monitor>-backup <monitor>-backup-now), or restore from the destination that holds them"
                    .to_owned(),
            ),
            Self::UnknownBackup { .. } => {
                Some("set spec.influxdb.restoreFrom.backup to one of those, or latest".to_owned())
            }
            Self::EmptySource(_) => {
                Some("see the log of the backup pod's influxd-backup container".to_owned())
            }
            Self::NoDestination | Self::Local { .. } => None,
        }
    }
}
