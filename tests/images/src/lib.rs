//! Tests of the project's images (tests in tests/): the definition images/images.conf, the two
//! builders that read it (images/build.sh here, docker/Dockerfile for kind and registries), and
//! each image run with runc without any cluster.
//!
//! The tests need umoci, skopeo, runc, readelf, gcc and root. Without them they skip with a
//! message, unless IOT_REQUIRE_IMAGES is set (as `make test` sets it): then they fail.

pub mod definition;
pub mod dockerfile;
pub mod oci;
pub mod runc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("`{0}` failed: {1}")]
    Command(String, String),
    #[error("{0}")]
    Invalid(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Error::Io(path.display().to_string(), e)
    }
}

/// Runs a command to completion; its stdout when it succeeds.
pub fn run(cmd: &mut Command) -> Result<String, Error> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| Error::Command(shown.clone(), e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command(
            shown,
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        ))
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn load_definition() -> definition::Definition {
    let path = repo_root().join("images/images.conf");
    definition::Definition::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The workspace version (`[workspace.package]` of the root Cargo.toml).
pub fn workspace_version() -> String {
    let text = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap_or_default();
    let package = text.split("[workspace.package]").nth(1).unwrap_or_default();
    package
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

const TOOLS: [&str; 6] = ["umoci", "skopeo", "runc", "readelf", "gcc", "tar"];

fn missing_tools() -> Vec<String> {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .map(|t| t.to_string())
        .collect();
    let root = run(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0");
    if !root {
        missing.push("root (runc, and files owned by root in the images)".into());
    }
    missing
}

/// Builds every image once per test process with images/build.sh (which takes a lock, so test
/// processes never write target/images at the same time) and returns target/images. None when
/// the tools are missing and IOT_REQUIRE_IMAGES is unset: the caller then skips.
pub fn built_images() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let missing = missing_tools();
            if !missing.is_empty() {
                assert!(
                    std::env::var_os("IOT_REQUIRE_IMAGES").is_none(),
                    "IOT_REQUIRE_IMAGES is set but these are missing: {}",
                    missing.join(", ")
                );
                eprintln!(
                    "SKIPPED: the image tests need {} (scripts/install-deps.sh installs them; \
                     set IOT_REQUIRE_IMAGES=1 to make this an error)",
                    missing.join(", ")
                );
                return None;
            }
            let script = repo_root().join("images/build.sh");
            match run(&mut Command::new(&script)) {
                Ok(out) => eprint!("{out}"),
                Err(e) => panic!("{e}"),
            }
            Some(repo_root().join("target/images"))
        })
        .clone()
}

/// The archive of image `name`, opened (building the images first).
pub fn archive(dir: &Path, name: &str) -> oci::Archive {
    oci::Archive::open(&dir.join(format!("{name}.tar"))).unwrap_or_else(|e| panic!("{name}: {e}"))
}
