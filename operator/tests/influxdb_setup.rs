//! The InfluxDB setup sidecar's script against a real influxd (Debian's, as `make deps`
//! installs): users, grants, databases and retention converge, and running it again with a
//! changed password (a restart after the Secret changed) converges too.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iot_operator::controller::build::influxdb::SETUP_SCRIPT;
use iot_testkit::influx::InfluxServer;

const ADMIN: (&str, &str) = ("admin", "admin-pw");

struct Setup(Child);

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the script as the sidecar would and waits for its readiness file.
fn run_setup(server: &InfluxServer, dir: &Path, writer_password: &str, retention: &str) -> Setup {
    let script = dir.join("setup.sh");
    std::fs::write(&script, SETUP_SCRIPT).expect("write script");
    let done = dir.join("done");
    let _ = std::fs::remove_file(&done);
    let child = Command::new("sh")
        .arg(&script)
        .env("INFLUX_PORT", server.port().to_string())
        .env("INFLUX_ADMIN_USER", ADMIN.0)
        .env("INFLUX_ADMIN_PASSWORD", ADMIN.1)
        .env("INFLUX_WRITER_USER", "iot_writer")
        .env("INFLUX_WRITER_PASSWORD", writer_password)
        .env("INFLUX_READER_USER", "iot_reader")
        .env("INFLUX_READER_PASSWORD", "reader-pw")
        .env("INFLUX_DATABASES", "dht aqi")
        .env("INFLUX_RETENTION", retention)
        .env("SETUP_DONE_FILE", &done)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run sh");
    let mut setup = Setup(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done.exists() {
        if let Ok(Some(status)) = setup.0.try_wait() {
            panic!("the setup script exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "setup did not finish within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    setup
}

/// `influx -execute` as a user; Ok(stdout) or Err(output).
fn influx_as(
    server: &InfluxServer,
    user: &str,
    password: &str,
    db: &str,
    q: &str,
) -> Result<String, String> {
    let out = Command::new("influx")
        .args(["-host", "127.0.0.1", "-port", &server.port().to_string()])
        .args([
            "-username",
            user,
            "-password",
            password,
            "-database",
            db,
            "-execute",
            q,
        ])
        .output()
        .expect("run influx");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && !text.contains("ERR:") {
        Ok(text)
    } else {
        Err(text)
    }
}

#[tokio::test]
async fn setup_creates_users_databases_and_retention_and_is_idempotent() {
    let server = InfluxServer::start_with_auth(ADMIN.0, ADMIN.1).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let first = run_setup(&server, dir.path(), "writer-pw", "30d");
    drop(first);
    for db in ["dht", "aqi"] {
        influx_as(
            &server,
            "iot_writer",
            "writer-pw",
            db,
            "INSERT temperature,place=room1 value=21.5",
        )
        .expect("the writer writes");
        let read = influx_as(
            &server,
            "iot_reader",
            "reader-pw",
            db,
            "SELECT * FROM temperature",
        )
        .expect("the reader reads");
        assert!(read.contains("21.5"), "{read}");
        influx_as(
            &server,
            "iot_writer",
            "writer-pw",
            db,
            "SELECT count(*) FROM temperature",
        )
        .expect("the writer reads (the AQI ingestor looks up its watermark)");
        let denied = influx_as(
            &server,
            "iot_reader",
            "reader-pw",
            db,
            "INSERT temperature,place=x value=1",
        );
        assert!(denied.is_err(), "the reader must not write");
    }
    let denied = influx_as(
        &server,
        "iot_writer",
        "writer-pw",
        "dht",
        "CREATE DATABASE other",
    );
    assert!(denied.is_err(), "the writer is not an admin");
    let policies =
        influx_as(&server, ADMIN.0, ADMIN.1, "dht", "SHOW RETENTION POLICIES").expect("admin");
    assert!(policies.contains("720h0m0s"), "30d retention: {policies}");

    // A restart after the Secret changed: the new password wins, the old one stops working.
    let second = run_setup(&server, dir.path(), "new-writer-pw", "INF");
    drop(second);
    influx_as(
        &server,
        "iot_writer",
        "new-writer-pw",
        "dht",
        "SHOW MEASUREMENTS",
    )
    .expect("new password");
    assert!(
        influx_as(
            &server,
            "iot_writer",
            "writer-pw",
            "dht",
            "SHOW MEASUREMENTS"
        )
        .is_err()
    );
    let policies =
        influx_as(&server, ADMIN.0, ADMIN.1, "dht", "SHOW RETENTION POLICIES").expect("admin");
    assert!(policies.contains("autogen 0s"), "INF retention: {policies}");
}
