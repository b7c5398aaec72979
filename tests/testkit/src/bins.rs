//! The workspace's own binaries, for tests that run one crate's binary from another's tests.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Path of the workspace binary `name` (package of the same name), built first if needed with
/// the same profile as the running test. Building is a no-op when it is up to date.
pub fn workspace_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    // target/<profile>/deps/<test-binary> → target/<profile>/
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf();
    let path = profile_dir.join(name);
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", name, "--bin", name]);
        // Cargo gives the test process the variables of the crate under test. Build scripts
        // track some of them (ring's reruns on CARGO_MANIFEST_DIR), so passing them on would
        // make every test run rebuild half the workspace, and the next plain build again.
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy();
            if var.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&var.as_ref())
            {
                cmd.env_remove(var.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p {name} failed");
        built.push(name.to_string());
    }
    assert!(path.exists(), "{} was not built", path.display());
    path
}
