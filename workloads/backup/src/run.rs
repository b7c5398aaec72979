//! The three subcommands: store a backup, list the backups, fetch one for a restore.

use std::path::{Path as FsPath, PathBuf};

use futures::TryStreamExt;
use iot_common::backup_result::BackupResult;
use jiff::Timestamp;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::io::AsyncWriteExt;

use crate::BackupError;
use crate::archive;
use crate::destination::{Destination, Opened};
use crate::names::{self, Wanted};

fn local(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Local { what, source }
}

fn store_error(op: &'static str) -> impl FnOnce(object_store::Error) -> BackupError {
    move |source| BackupError::Store { op, source }
}

/// The backups of `monitor` at the destination, oldest first.
async fn backups(opened: &Opened, monitor: &str) -> Result<Vec<(String, u64)>, BackupError> {
    let listed: Vec<_> = opened
        .store
        .list(Some(&opened.prefix))
        .try_collect()
        .await
        .map_err(store_error("list the backups"))?;
    let mut found: Vec<(String, u64)> = listed
        .into_iter()
        .filter_map(|meta| {
            let name = meta.location.filename()?.to_owned();
            // Only files right under the prefix: a "folder" below it is someone else's.
            let parent_is_prefix = meta
                .location
                .prefix_match(&opened.prefix)
                .is_some_and(|mut parts| parts.next().is_some() && parts.next().is_none());
            (parent_is_prefix && names::is_backup_of(monitor, &name)).then_some((name, meta.size))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn object(opened: &Opened, name: &str) -> Path {
    opened.prefix.clone().join(name)
}

/// Packs `source` (InfluxDB's portable backup), stores it as `<monitor>-<time>.tar.gz`, and
/// deletes all but the newest `keep` backups of `monitor`. `work` holds the archive meanwhile.
pub async fn store(
    destination: &Destination,
    source: &FsPath,
    work: &FsPath,
    monitor: &str,
    keep: usize,
) -> Result<BackupResult, BackupError> {
    if !archive::has_files(source) {
        return Err(BackupError::EmptySource(source.display().to_string()));
    }
    let opened = destination.open()?;
    let now = Timestamp::now();
    let name = names::backup_name(monitor, now);
    let packed = work.join(&name);
    let size = archive::pack(source.to_path_buf(), packed.clone())
        .await
        .map_err(local(format!("cannot pack {}", source.display())))?;
    tracing::info!(name, size, "packed");

    // Streamed: a multipart upload once the archive outgrows the buffer, so memory stays flat.
    let mut file = tokio::fs::File::open(&packed)
        .await
        .map_err(local("cannot read the archive"))?;
    let mut upload = BufWriter::new(opened.store.clone(), object(&opened, &name));
    if let Err(e) = tokio::io::copy(&mut file, &mut upload).await {
        // Abort a multipart upload half done, so no part lingers; the original error is
        // the one to report.
        let _ = upload.abort().await;
        return Err(io_or_store(e, "store the backup"));
    }
    // A failed completion cleans up after itself (and a second call would panic).
    upload
        .shutdown()
        .await
        .map_err(|e| io_or_store(e, "store the backup"))?;
    let _ = tokio::fs::remove_file(&packed).await;
    tracing::info!(name, destination = %destination.describe(), "stored");

    let mut stored: Vec<String> = backups(&opened, monitor)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // A listing a moment behind the write still counts the new backup as kept.
    if !stored.contains(&name) {
        stored.push(name.clone());
        stored.sort();
    }
    let deleted = names::beyond_keep(&stored, keep).to_vec();
    for old in &deleted {
        opened
            .store
            .delete(&object(&opened, old))
            .await
            .map_err(store_error("delete an old backup"))?;
        tracing::info!(name = old, "deleted: more than keep backups");
    }
    let kept = stored[deleted.len()..].to_vec();
    Ok(BackupResult::Stored {
        name,
        size,
        time: now.to_string(),
        deleted,
        kept,
    })
}

/// An I/O error of the upload: object_store's error when it carries one.
fn io_or_store(e: std::io::Error, op: &'static str) -> BackupError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<object_store::Error>())
    {
        Some(_) => match e
            .into_inner()
            .map(|inner| inner.downcast::<object_store::Error>())
        {
            Some(Ok(source)) => BackupError::Store {
                op,
                source: *source,
            },
            _ => BackupError::Local {
                what: format!("cannot {op}"),
                source: std::io::Error::other("upload failed"),
            },
        },
        None => BackupError::Local {
            what: format!("cannot {op}"),
            source: e,
        },
    }
}

/// The backups of `monitor`, oldest first, with their sizes.
pub async fn list(
    destination: &Destination,
    monitor: &str,
) -> Result<Vec<(String, u64)>, BackupError> {
    backups(&destination.open()?, monitor).await
}

/// Fetches the backup `wanted` asks for and unpacks it into `into/data`; its name goes to
/// `into/name`. Idempotent: an earlier, interrupted fetch is overwritten.
pub async fn fetch(
    destination: &Destination,
    monitor: &str,
    wanted: &Wanted,
    into: &FsPath,
) -> Result<BackupResult, BackupError> {
    let opened = destination.open()?;
    let found = backups(&opened, monitor).await?;
    let names: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
    let Some(name) = wanted.pick(&names).cloned() else {
        return Err(match wanted {
            Wanted::Latest => BackupError::NoBackup {
                monitor: monitor.to_owned(),
                place: destination.describe(),
            },
            Wanted::Named(name) => BackupError::UnknownBackup {
                name: name.clone(),
                place: destination.describe(),
                available: if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                },
            },
        });
    };
    let archive_path: PathBuf = into.join(&name);
    let mut body = opened
        .store
        .get(&object(&opened, &name))
        .await
        .map_err(store_error("fetch the backup"))?
        .into_stream();
    let mut file = tokio::fs::File::create(&archive_path)
        .await
        .map_err(local("cannot write the fetched backup"))?;
    let mut size = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(store_error("fetch the backup"))?
    {
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(local("cannot write the fetched backup"))?;
    }
    file.flush()
        .await
        .map_err(local("cannot write the fetched backup"))?;
    drop(file);
    let data = into.join("data");
    if tokio::fs::try_exists(&data).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(&data)
            .await
            .map_err(local("cannot clear an earlier fetch"))?;
    }
    archive::unpack(archive_path.clone(), data)
        .await
        .map_err(local(format!("cannot unpack {name}")))?;
    let _ = tokio::fs::remove_file(&archive_path).await;
    tokio::fs::write(into.join("name"), &name)
        .await
        .map_err(local("cannot write the backup's name"))?;
    tracing::info!(name, size, "fetched and unpacked");
    Ok(BackupResult::Fetched { name, size })
}
