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

use iot_operator::controller::desired::influxdb::{PLAN_KEY, SETUP_SCRIPT};
use iot_operator::controller::desired::influxdb_plan;
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

/// The plan the operator renders for a monitor with this spec (the setup ConfigMap's `plan`).
fn plan_for(spec: &str) -> String {
    let mut monitor = IotMonitor::new("lab", serde_yaml::from_str(spec).expect("spec"));
    monitor.metadata.namespace = Some(NAMESPACE.into());
    monitor.metadata.uid = Some("uid".into());
    let model = validate::validate(&monitor, &Default::default()).expect("valid spec");
    let objects = desired::build(&model);
    let setup = objects
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("lab-influxdb-setup"))
        .expect("setup ConfigMap");
    setup.data.as_ref().expect("data")[PLAN_KEY].clone()
}

/// Runs the script as the sidecar would, with the plan of `spec`, and waits for its readiness
/// file. The plan stays at `dir/plan`: rewriting it is what a changed ConfigMap does.
fn run_setup(server: &InfluxServer, dir: &Path, writer_password: &str, spec: &str) -> Setup {
    require_influx_cli();
    let script = dir.join("setup.sh");
    std::fs::write(&script, SETUP_SCRIPT).expect("write script");
    std::fs::write(dir.join("plan"), plan_for(spec)).expect("write plan");
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
        .env("SETUP_PLAN", dir.join("plan"))
        .env("SETUP_POLL_SECONDS", "1")
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

    let first = run_setup(
        &server,
        dir.path(),
        "writer-pw",
        "{influxdb: {retention: 30d}}",
    );
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
    let second = run_setup(
        &server,
        dir.path(),
        "new-writer-pw",
        "{influxdb: {retention: INF}}",
    );
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
    let autogen = policies
        .lines()
        .find(|l| l.starts_with("autogen "))
        .unwrap_or_default();
    assert!(
        autogen.split_whitespace().nth(1) == Some("0s"),
        "INF retention: {policies}"
    );
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
    drop(run_setup(
        &server,
        dir.path(),
        "writer-pw",
        "{influxdb: {retention: INF}}",
    ));

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

/// Polls `q` until `done(rows)` holds; the rows of the first series of the answer.
async fn wait_rows(
    server: &InfluxServer,
    db: &str,
    q: &str,
    what: &str,
    done: impl Fn(&[Vec<serde_json::Value>]) -> bool,
) -> Vec<Vec<serde_json::Value>> {
    // Bound generous enough for a shared machine: a 1-minute query runs once a minute.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let rows = server.rows(db, q).await;
        if done(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {rows:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// (time in s, mean, min, max, count) of each row of `SELECT mean_F, min_F, max_F, count_F`.
fn aggregates(rows: &[Vec<serde_json::Value>]) -> Vec<(i64, f64, f64, f64, u64)> {
    rows.iter()
        .map(|r| {
            (
                r[0].as_i64().expect("time") / 1_000_000_000,
                r[1].as_f64().expect("mean"),
                r[2].as_f64().expect("min"),
                r[3].as_f64().expect("max"),
                r[4].as_u64().expect("count"),
            )
        })
        .collect()
}

const TIERS: &str = "{influxdb: {downsampling: [{every: 5m, keep: 2h}, {every: 1m, keep: 1h}]}}";

#[tokio::test]
async fn tiers_hold_known_means_mins_maxes_and_counts_for_old_and_new_data() {
    let server = InfluxServer::start_with_auth(ADMIN.0, ADMIN.1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Readings stored before the tiers exist: two minutes of a 5-minute bucket that has ended.
    let five = (now_seconds() / 300 - 2) * 300;
    server.query("", "CREATE DATABASE dht").await;
    server.query("", "CREATE DATABASE aqi").await;
    let mut lines = Vec::new();
    for i in 0..6 {
        lines.push(format!(
            "temperature,place=lab,sensor=s1 value={} {}",
            10 + i,
            five + 10 * i
        ));
        lines.push(format!(
            "temperature,place=lab,sensor=s1 value={} {}",
            20 + i,
            five + 60 + 10 * i
        ));
    }
    write(&server, "dht", &lines).await;
    // AQI fields: an integer, and a string the numeric aggregates leave out.
    write(
        &server,
        "aqi",
        &[
            format!("air_quality,location_id=7 aqi=40i,origin=\"upstream\" {five}"),
            format!(
                "air_quality,location_id=7 aqi=60i,origin=\"computed\" {}",
                five + 120
            ),
        ],
    )
    .await;

    let _setup = run_setup(&server, dir.path(), "writer-pw", TIERS);
    let backfilled = |db: &'static str| {
        let server = &server;
        async move {
            wait_rows(
                server,
                db,
                "SELECT count(\"done\") FROM \"iot_meta\".\"downsampling_backfill\"",
                "backfill marks",
                |rows| rows.first().and_then(|r| r[1].as_u64()) == Some(2),
            )
            .await
        }
    };
    backfilled("dht").await;
    backfilled("aqi").await;

    let select = |rp: &str, from: i64, to: i64| {
        format!(
            "SELECT mean_value, min_value, max_value, count_value FROM \"{rp}\".\"temperature\" WHERE time >= {from}s AND time < {to}s AND place = 'lab' AND sensor = 's1'"
        )
    };
    let minutes = aggregates(&server.rows("dht", &select("ds_1m", five, five + 300)).await);
    assert_eq!(
        minutes,
        [
            (five, 12.5, 10.0, 15.0, 6),
            (five + 60, 22.5, 20.0, 25.0, 6)
        ]
    );
    let fives = aggregates(&server.rows("dht", &select("ds_5m", five, five + 300)).await);
    assert_eq!(fives, [(five, 17.5, 10.0, 25.0, 12)]);
    let aqi = server
        .rows(
            "aqi",
            &format!("SELECT mean_aqi, min_aqi, max_aqi, count_aqi, count_origin FROM \"ds_5m\".\"air_quality\" WHERE time = {five}s"),
        )
        .await;
    let numbers: Vec<Vec<f64>> = aqi
        .iter()
        .map(|r| r.iter().map(|v| v.as_f64().expect("number")).collect())
        .collect();
    assert_eq!(
        numbers,
        [vec![
            (five * 1_000_000_000) as f64,
            50.0,
            40.0,
            60.0,
            2.0,
            2.0
        ]]
    );

    // New readings, after the backfill: only the continuous query can put them in the tier.
    let now = now_seconds();
    let minute = now / 60 * 60;
    let fresh: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "temperature,place=lab,sensor=s2 value={} {}",
                30 + 2 * i,
                minute
            )
        })
        .enumerate()
        .map(|(i, line)| format!("{line}{i:09}"))
        .collect();
    server.write("dht", &fresh.join("\n")).await;
    let q = format!(
        "SELECT mean_value, min_value, max_value, count_value FROM \"ds_1m\".\"temperature\" WHERE time >= {minute}s AND sensor = 's2'"
    );
    let rows = wait_rows(
        &server,
        "dht",
        &q,
        "the 1m query's bucket of new readings",
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(aggregates(&rows), [(minute, 32.0, 30.0, 34.0, 3)]);

    // InfluxDB holds the queries the operator renders, word for word (as it prints them).
    let shown = server
        .query("", "SHOW CONTINUOUS QUERIES")
        .await
        .to_string();
    for (db, every) in [("dht", 300), ("aqi", 300), ("dht", 60), ("aqi", 60)] {
        let tier = iot_operator::controller::validate::Tier {
            every_seconds: every,
            keep: "1h".into(),
            keep_seconds: Some(3600),
        };
        let (name, _) = influxdb_plan::continuous_query(db, &tier);
        let rp = tier.policy();
        let minutes = every / 60;
        let expected = format!(
            "CREATE CONTINUOUS QUERY {name} ON {db} RESAMPLE FOR {}m BEGIN SELECT mean(*), min(*), max(*), count(*) INTO {db}.{rp}.:MEASUREMENT FROM {db}.autogen./.*/ GROUP BY time({minutes}m), * END",
            2 * minutes
        );
        assert!(shown.contains(&expected), "{expected}\nnot in {shown}");
    }
}

#[tokio::test]
async fn a_changed_tier_replaces_its_query_while_influxdb_runs() {
    let server = InfluxServer::start_with_auth(ADMIN.0, ADMIN.1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let _setup = run_setup(&server, dir.path(), "writer-pw", TIERS);
    let names = |shown: &serde_json::Value| -> Vec<String> {
        shown["results"][0]["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == "dht")
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|row| row[0].as_str().map(str::to_owned))
            .collect()
    };
    let before = names(&server.query("", "SHOW CONTINUOUS QUERIES").await);
    assert_eq!(before.len(), 2, "{before:?}");

    // The ConfigMap changes (1m becomes 2m, 5m kept longer); the sidecar notices by itself.
    std::fs::write(
        dir.path().join("plan"),
        plan_for("{influxdb: {downsampling: [{every: 5m, keep: 3h}, {every: 2m, keep: 1h}]}}"),
    )
    .expect("rewrite plan");
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let now = names(&server.query("", "SHOW CONTINUOUS QUERIES").await);
        if now.iter().any(|n| n.starts_with("ds_2m_"))
            && !now.iter().any(|n| n.starts_with("ds_1m_"))
        {
            break now;
        }
        assert!(Instant::now() < deadline, "queries still {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after.len(), 2, "{after:?}");
    let five: Vec<_> = before.iter().filter(|n| n.starts_with("ds_5m_")).collect();
    assert!(
        after.contains(five[0]),
        "the unchanged 5m query stays: {after:?}"
    );
    let policies = server
        .query("dht", "SHOW RETENTION POLICIES ON dht")
        .await
        .to_string();
    assert!(
        policies.contains("\"ds_5m\",\"3h0m0s\""),
        "5m kept longer: {policies}"
    );
    // The removed tier's policy stays; its points expire by its own duration.
    assert!(policies.contains("\"ds_1m\",\"1h0m0s\""), "{policies}");
    assert!(policies.contains("\"ds_2m\",\"1h0m0s\""), "{policies}");
    // The dashboards' table: a day reads raw points.
    let rows = server
        .rows(
            "dht",
            "SELECT \"rp\" FROM \"iot_meta\".\"dashboard_tier\" WHERE time <= 1700086400000ms - 1700000000000ms ORDER BY time DESC LIMIT 1",
        )
        .await;
    assert_eq!(rows[0][1], "autogen");
}

async fn write(server: &InfluxServer, db: &str, lines: &[String]) {
    let ns: Vec<String> = lines.iter().map(|l| format!("{l}000000000")).collect();
    server.write(db, &ns.join("\n")).await;
}
