//! Where backups are kept: a directory (the operator's backup volume) or an S3-compatible
//! bucket. Both are an `object_store::ObjectStore`, so storing, listing, fetching and deleting
//! are one code path.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::BackupError;

/// The destination flags; exactly one of `--dir` and `--s3-endpoint` is given.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Destination {
    /// A directory to keep backups in (the backup volume's mount).
    #[arg(long, env = "BACKUP_DIR", conflicts_with = "s3_endpoint")]
    pub dir: Option<PathBuf>,
    /// An S3-compatible endpoint, such as `https://s3.eu-west-1.amazonaws.com` or
    /// `http://minio.storage:9000`.
    #[arg(long, env = "S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// The bucket.
    #[arg(long, env = "S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// A prefix ("folder") inside the bucket.
    #[arg(long, env = "S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
    /// The bucket's region (most S3-compatible servers accept any).
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// The access key id.
    #[arg(
        long,
        env = "AWS_ACCESS_KEY_ID",
        hide_env_values = true,
        default_value = ""
    )]
    pub access_key_id: String,
    /// The secret access key.
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    pub secret_access_key: String,
    /// The Secret the keys come from, named in messages that say what to fix.
    #[arg(long, env = "S3_CREDENTIALS_SECRET")]
    pub credentials_secret: Option<String>,
}

/// An opened destination: the store and the prefix backups live under.
pub struct Opened {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
}

impl Destination {
    /// Where backups go, for messages: the directory, or `s3://bucket/prefix at endpoint`.
    pub fn describe(&self) -> String {
        match (&self.dir, &self.s3_endpoint, &self.s3_bucket) {
            (Some(dir), _, _) => dir.display().to_string(),
            (None, Some(endpoint), Some(bucket)) => {
                format!("s3://{bucket}/{} at {endpoint}", self.s3_prefix)
            }
            _ => "nowhere".to_owned(),
        }
    }

    pub fn is_s3(&self) -> bool {
        self.s3_endpoint.is_some()
    }

    pub fn open(&self) -> Result<Opened, BackupError> {
        if let Some(dir) = &self.dir {
            let store =
                LocalFileSystem::new_with_prefix(dir).map_err(|source| BackupError::Store {
                    op: "open the backup directory",
                    source,
                })?;
            return Ok(Opened {
                store: Arc::new(store),
                prefix: Path::default(),
            });
        }
        let (Some(endpoint), Some(bucket)) = (&self.s3_endpoint, &self.s3_bucket) else {
            return Err(BackupError::NoDestination);
        };
        let retry = object_store::RetryConfig {
            // A wrong endpoint or bucket should fail the run in seconds, with its reason, not
            // after the default three minutes of retries.
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            ..object_store::RetryConfig::default()
        };
        let store = AmazonS3Builder::new()
            .with_endpoint(endpoint.trim_end_matches('/'))
            .with_allow_http(endpoint.starts_with("http://"))
            // Path-style (`endpoint/bucket/key`): what S3-compatible servers all accept.
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(bucket)
            .with_region(&self.s3_region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_retry(retry)
            .build()
            .map_err(|source| BackupError::Store {
                op: "configure the S3 client",
                source,
            })?;
        Ok(Opened {
            store: Arc::new(store),
            prefix: Path::from(self.s3_prefix.trim_matches('/')),
        })
    }

    /// What to change when `error` happened here: the words a person needs, naming the spec
    /// field or the Secret.
    pub fn fix_for(&self, error: &object_store::Error) -> Option<String> {
        let text = error.to_string();
        let secret = self.credentials_secret.as_deref().map_or_else(
            || "the credentials Secret".to_owned(),
            |s| format!("Secret {s}"),
        );
        let has = |needle: &str| text.contains(needle);
        if !self.is_s3() {
            return match error {
                object_store::Error::PermissionDenied { .. } => Some(
                    "the backup volume is not writable by the backup pod's user (65532): use a StorageClass whose volumes non-root pods can write"
                        .to_owned(),
                ),
                _ if has("Permission denied") || has("permission denied") => Some(
                    "the backup volume is not writable by the backup pod's user (65532): use a StorageClass whose volumes non-root pods can write"
                        .to_owned(),
                ),
                _ if has("No space left") => Some(
                    "the backup volume is full: lower spec.influxdb.backup.keep or grow destination.pvc.size"
                        .to_owned(),
                ),
                _ => None,
            };
        }
        let bucket = self.s3_bucket.as_deref().unwrap_or_default();
        let endpoint = self.s3_endpoint.as_deref().unwrap_or_default();
        if has("NoSuchBucket") || has("does not exist") && has("bucket") {
            Some(format!(
                "bucket {bucket} does not exist at {endpoint}: create it, or fix spec.influxdb.backup.destination.s3.bucket"
            ))
        } else if has("InvalidAccessKeyId")
            || has("SignatureDoesNotMatch")
            || has("AccessDenied")
            || matches!(
                error,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            )
        {
            Some(format!(
                "{endpoint} refused the credentials for bucket {bucket}: check the access key and secret key in {secret} (and that they may write the bucket)"
            ))
        } else if has("error sending request")
            || has("Connection refused")
            || has("dns error")
            || has("timed out")
        {
            Some(format!(
                "cannot reach {endpoint}: check spec.influxdb.backup.destination.s3.endpoint, and that the backup pod may reach it"
            ))
        } else {
            None
        }
    }
}
