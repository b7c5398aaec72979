//! An OCI archive as images/build.sh writes it: its reference, its config, and its files
//! unpacked with umoci into a runtime bundle.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::definition::ImageConfig;
use crate::{Error, run};

pub struct Archive {
    pub path: PathBuf,
    /// `org.opencontainers.image.ref.name` of its only manifest.
    pub reference: String,
    /// The image config blob (architecture, os, config, history ...).
    pub image: Value,
    /// The archive's OCI layout, extracted.
    layout: tempfile::TempDir,
}

fn read_json(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

impl Archive {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let layout = tempfile::tempdir().map_err(|e| Error::io(path, e))?;
        run(std::process::Command::new("tar")
            .arg("-xf")
            .arg(path)
            .arg("-C")
            .arg(layout.path()))?;
        let index = read_json(&layout.path().join("index.json"))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let [entry] = manifests.as_slice() else {
            return Err(Error::Invalid(format!(
                "{}: expected one manifest, found {}",
                path.display(),
                manifests.len()
            )));
        };
        let reference = entry["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let digest = entry["digest"].as_str().unwrap_or_default();
        let manifest = read_json(&blob(layout.path(), digest))?;
        let image = read_json(&blob(
            layout.path(),
            manifest["config"]["digest"].as_str().unwrap_or_default(),
        ))?;
        Ok(Archive {
            path: path.to_path_buf(),
            reference,
            image,
            layout,
        })
    }

    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// The config in the terms of the definition.
    pub fn config(&self) -> ImageConfig {
        let c = &self.image["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let keys = |v: &Value| {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        ImageConfig {
            user: c["User"].as_str().unwrap_or_default().to_string(),
            env: strings(&c["Env"]),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            exposed_ports: keys(&c["ExposedPorts"]),
            labels: c["Labels"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Unpacks the image into a fresh runtime bundle (rootfs/ and config.json) with umoci.
    pub fn unpack(&self) -> Result<Bundle, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(&self.path, e))?;
        let bundle = dir.path().join("bundle");
        run(std::process::Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!(
                "{}:{}",
                self.layout.path().display(),
                self.reference
            ))
            .arg(&bundle))?;
        Ok(Bundle { dir, path: bundle })
    }
}

/// A runtime bundle; removed when dropped.
pub struct Bundle {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// One entry of an image's file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        sha: String,
    },
    Link(String),
    Dir {
        mode: u32,
    },
}

impl Bundle {
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    /// A scratch directory beside the bundle (files to mount into the container).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Every entry under rootfs/, by absolute path in the image.
    pub fn tree(&self) -> Result<BTreeMap<String, Node>, Error> {
        tree(&self.rootfs())
    }
}

/// Every entry under `root`, by absolute path inside it ("/etc/passwd"). Files carry a content
/// hash (sha256sum), so two trees compare by content, mode and owner.
pub fn tree(root: &Path) -> Result<BTreeMap<String, Node>, Error> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let key = format!("/{}", path.strip_prefix(root).unwrap_or(&path).display());
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
                Node::Link(target.display().to_string())
            } else if meta.is_dir() {
                todo.push(path.clone());
                Node::Dir { mode }
            } else {
                let out = run(std::process::Command::new("sha256sum").arg(&path))?;
                Node::File {
                    mode,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    sha: out
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                }
            };
            out.insert(key, node);
        }
    }
    Ok(out)
}
