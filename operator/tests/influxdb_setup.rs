//! The InfluxDB setup sidecar's script against a real influxd (Debian's, as `make deps`
//! installs): users, grants, databases and retention converge, and running it again with a
//! changed password (a restart after the Secret changed) converges too. Then the contract: the
//! environment the operator builds for the workloads drives the real binaries, with the
//! non-admin writer, into the databases the script made, the simulator's sensors speaking DTLS
//! as the devices the operator registers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use iot_operator::controller::desired::influxdb::SETUP_SCRIPT;
use iot_operator::controller::{desired, validate};
use iot_operator::crd::IotMonitor;
use iot_testkit::bins::workspace_bin;
use iot_testkit::influx::InfluxServer;
use iot_testkit::ports::free_port;
use k8s_openapi::api::core::v1::Container;

const ADMIN: (&str, &str) = ("admin", "admin-pw");

struct Setup(Child);

impl Drop for Setup {
    /// SIGTERM, as the kubelet sends it: the script must exit promptly by itself.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        panic!("the setup script ignored SIGTERM for 5 s");
    }
}

/// The script drives the `influx` CLI, as the InfluxDB image ships it; here it comes from
/// Debian's influxdb-client package.
fn require_influx_cli() {
    let found = Command::new("influx")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "the `influx` CLI is missing: install Debian's influxdb-client package (apt-get install influxdb-client)"
    );
}

/// Runs the script as the sidecar would and waits for its readiness file.
fn run_setup(server: &InfluxServer, dir: &Path, writer_password: &str, retention: &str) -> Setup {
    require_influx_cli();
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
        // Not the test's own stdout/stderr: a left-over child would keep the pipe open.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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

/// The namespace of the test's monitor, for the pod's own fields (the downward API).
const NAMESPACE: &str = "iot";

/// The container's environment as a process environment: Secret references resolved from
/// `secrets`, the pod's namespace from [`NAMESPACE`], then `overrides` (addresses that differ
/// outside a cluster) applied.
fn process_env(
    container: &Container,
    secrets: &BTreeMap<&str, &str>,
    overrides: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) if from.field_ref.is_some() => {
                let path = from.field_ref.as_ref().map(|f| f.field_path.as_str());
                assert_eq!(path, Some("metadata.namespace"), "{}", var.name);
                NAMESPACE.to_owned()
            }
            (None, Some(from)) => {
                let key = from
                    .secret_key_ref
                    .as_ref()
                    .map(|r| r.key.as_str())
                    .unwrap_or_default();
                secrets
                    .get(key)
                    .unwrap_or_else(|| panic!("no test value for Secret key {key}"))
                    .to_string()
            }
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    for (name, value) in overrides {
        assert!(env.contains_key(*name), "the operator does not set {name}");
        env.insert((*name).to_owned(), value.clone());
    }
    env.into_iter().collect()
}

fn container<'a>(objects: &'a desired::DesiredObjects, name: &str) -> &'a Container {
    let deployment = objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .expect("deployment");
    &deployment
        .spec
        .template
        .spec
        .as_ref()
        .expect("pod")
        .containers[0]
}

#[tokio::test]
async fn the_env_the_operator_builds_drives_the_real_workloads() {
    let server = InfluxServer::start_with_auth(ADMIN.0, ADMIN.1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // INF: the AQI fixture is from 2019, and InfluxDB drops points older than the retention.
    drop(run_setup(&server, dir.path(), "writer-pw", "INF"));

    let mut monitor = IotMonitor::new("lab", Default::default());
    monitor.metadata.namespace = Some(NAMESPACE.into());
    monitor.metadata.uid = Some("uid".into());
    let model = validate::validate(&monitor, &Default::default()).expect("spec: {} is valid");
    let objects = desired::build(&model);
    let secrets = BTreeMap::from([
        ("influxdb-writer-username", "iot_writer"),
        ("influxdb-writer-password", "writer-pw"),
    ]);
    let udp_port = || {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp port");
        udp.local_addr().expect("addr").to_string()
    };
    let (coap, coaps) = (udp_port(), udp_port());
    // The registry the operator keeps in the Secret and the ConfigMap `lab-devices`, as the
    // files the binaries take outside a cluster: a devices file for coap-server, a key file
    // per sensor for the simulator (the Secret volume's layout).
    let registry = &objects.devices;
    let places = registry.places.data.clone().expect("places");
    let keys_dir = dir.path().join("device-keys");
    std::fs::create_dir(&keys_dir).expect("keys dir");
    let mut devices_file = String::new();
    for name in &registry.names {
        let key = format!("test-key-of-{name}-0123456789");
        std::fs::write(keys_dir.join(name), &key).expect("key file");
        devices_file.push_str(&format!("{name} {} {key}\n", places[name]));
    }
    let devices_path = dir.path().join("devices");
    std::fs::write(&devices_path, devices_file).expect("devices file");

    let coap_env = process_env(
        container(&objects, "lab-coap-server"),
        &secrets,
        &[
            ("INFLUX_URL", server.url()),
            ("COAP_BIND", coap),
            ("COAP_DTLS_BIND", coaps.clone()),
            ("HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
            ("LOG_FORMAT", "plain".into()),
        ],
    );
    assert!(
        coap_env.contains(&("DEVICES_FROM".into(), "lab-devices".into())),
        "coap-server follows the registry's objects: {coap_env:?}"
    );
    let mut coap_server = Command::new(workspace_bin("coap-server"))
        .envs(coap_env)
        // Outside a cluster, the same registry from a file.
        .env_remove("DEVICES_FROM")
        .env("DEVICES_FILE", &devices_path)
        .stdin(Stdio::null())
        .spawn()
        .expect("start coap-server");
    let sim = Command::new(workspace_bin("sensor-sim"))
        .envs(process_env(
            container(&objects, "lab-sensor-sim"),
            &secrets,
            &[
                ("COAP_SERVER", coaps),
                ("SIM_KEYS_DIR", keys_dir.display().to_string()),
                ("HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
                ("SIM_INTERVAL_SECONDS", "0.05".into()),
            ],
        ))
        .env("SIM_ROUNDS", "5")
        .status()
        .expect("run sensor-sim");
    // Give the server's batch its linger time before stopping it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = coap_server.kill();
    let _ = coap_server.wait();
    assert!(sim.success(), "sensor-sim failed");
    assert_eq!(server.count("dht", "temperature", "value").await, 4 * 5);

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../workloads/aqi-ingestor/tests/fixtures/basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json");
    let aqi = Command::new(workspace_bin("aqi-ingestor"))
        .envs(process_env(
            container(&objects, "lab-aqi-ingestor"),
            &secrets,
            &[
                ("INFLUX_URL", server.url()),
                ("AQI_SOURCE", fixture.display().to_string()),
                ("HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
            ],
        ))
        .env("AQI_ONCE", "true")
        .status()
        .expect("run aqi-ingestor");
    assert!(aqi.success(), "aqi-ingestor failed");
    assert!(server.count("aqi", "air_quality", "aqi").await > 0);
}
