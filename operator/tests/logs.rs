//! The operator's log as a pod, a file or a pipe receives it.

use std::process::{Command, Stdio};

#[test]
fn the_plain_log_has_no_colour_codes_when_stderr_is_not_a_terminal() {
    // No cluster to reach: the operator logs its start and an error (a red ERROR at a
    // terminal), then exits.
    let home = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_iot-operator"))
        .args(["run", "--http-addr", "127.0.0.1:0"])
        .args(["--leader-election", "false"])
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .env("HOME", home.path())
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("run iot-operator");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("serving /metrics"), "{log}");
    assert!(log.contains("operator stopped"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "ANSI escape codes in a plain log: {log:?}"
    );
}
