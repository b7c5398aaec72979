//! Where the repository, the kubeconfig and the control-plane tools are.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root (this crate lives in `<repo>/tests/testkit`).
pub fn repo_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The kubeconfig tests use; see the module docs.
pub fn kubeconfig_path() -> PathBuf {
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_ref()
        .and_then(|paths| std::env::split_paths(paths).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    let state = std::env::var_os("IOT_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".run/cluster"));
    state.join("kubeconfig")
}

/// The directory of the cached control-plane binaries (kubectl, helm, ...): `IOT_BIN_DIR`, else what
/// `tests/cluster/build.sh --print` says (the one place that knows the cache layout).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("IOT_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let script = repo_dir().join("tests/cluster/build.sh");
        match std::process::Command::new("bash")
            .arg(&script)
            .arg("--print")
            .output()
        {
            Ok(out) if out.status.success() => {
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
            // Fall back to the documented default; the spawn of kubectl/helm then names the path.
            _ => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/iot-operator/bin"),
        }
    })
    .clone()
}
