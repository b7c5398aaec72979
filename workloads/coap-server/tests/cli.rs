//! The binary's wiring of its flags: a device source turns DTLS on and closes plaintext, as the
//! operator's pods rely on (`DEVICES_FROM`, `COAP_PLAINTEXT`). The library's behaviour is tested
//! in-process elsewhere; this checks only what `main` makes of the flags.

use std::process::Command;
use std::time::{Duration, Instant};

use iot_testkit::bins::workspace_bin;
use iot_testkit::process::Process;

/// Starts coap-server with `flags` and returns its log once it says where it listens.
fn listening_line(flags: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(workspace_bin("coap-server"));
    command
        .args([
            "--bind",
            "127.0.0.1:0",
            "--dtls-bind",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--influx-url",
            "http://127.0.0.1:9",
            "--create-database",
            "false",
        ])
        .args(flags)
        // No cluster: --devices-from cannot reach one, and must still listen.
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(env.iter().copied());
    let mut server = Process::spawn("coap-server", &mut command);
    let started = Instant::now();
    let line = loop {
        let log = server.log();
        if let Some(line) = log.lines().find(|l| l.contains("coap-server listening")) {
            break line.to_owned();
        }
        assert!(
            server.is_running() && started.elapsed() < Duration::from_secs(20),
            "coap-server did not start listening:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    server.terminate();
    line
}

#[test]
fn a_devices_file_turns_dtls_on_and_closes_plaintext() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("devices.txt");
    std::fs::write(&file, "dht-1 kitchen 0123456789abcdef0123\n").expect("write");
    let line = listening_line(&["--devices-file", file.to_str().expect("utf-8")], &[]);
    assert!(line.contains("coaps=Some(127.0.0.1:"), "{line}");
    assert!(line.contains("coap=None"), "{line}");
}

#[test]
fn devices_from_the_cluster_turn_dtls_on_and_closes_plaintext_as_the_operator_sets_them() {
    let line = listening_line(
        &[],
        &[("DEVICES_FROM", "lab-devices"), ("COAP_PLAINTEXT", "false")],
    );
    assert!(line.contains("coaps=Some(127.0.0.1:"), "{line}");
    assert!(line.contains("coap=None"), "{line}");
}

#[test]
fn without_devices_plaintext_is_open_and_dtls_off() {
    let line = listening_line(&[], &[]);
    assert!(line.contains("coap=Some(127.0.0.1:"), "{line}");
    assert!(line.contains("coaps=None"), "{line}");
}
