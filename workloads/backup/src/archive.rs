//! A directory packed into a `.tar.gz` file and unpacked again: the tar and flate2 crates,
//! run on a blocking thread.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Packs every file under `dir` into `archive` (paths relative to `dir`); the archive's size.
pub async fn pack(dir: PathBuf, archive: PathBuf) -> std::io::Result<u64> {
    blocking(move || {
        let file = BufWriter::new(File::create(&archive)?);
        // InfluxDB's shard files are already compressed (TSM): the fastest level costs little
        // size and much less CPU on a node InfluxDB shares.
        let gz = GzEncoder::new(file, Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", &dir)?;
        let mut file = tar.into_inner()?.finish()?;
        file.flush()?;
        file.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        Ok(std::fs::metadata(&archive)?.len())
    })
    .await
}

/// Unpacks `archive` into `dir` (created if needed). tar's `unpack` refuses entries that would
/// land outside `dir`.
pub async fn unpack(archive: PathBuf, dir: PathBuf) -> std::io::Result<()> {
    blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let gz = GzDecoder::new(BufReader::new(File::open(&archive)?));
        let mut tar = tar::Archive::new(gz);
        tar.set_preserve_permissions(false);
        tar.unpack(&dir)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// Whether `dir` holds at least one file (InfluxDB's backup writes a manifest and shard files).
pub fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| {
        entries.any(|e| {
            e.is_ok_and(|e| {
                let path = e.path();
                path.is_file() || (path.is_dir() && has_files(&path))
            })
        })
    })
}
