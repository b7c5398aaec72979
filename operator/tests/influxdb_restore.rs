//! The restore Job's script against real influxds (Debian's, as `make deps` installs): a
//! portable backup of one InfluxDB restored into another, every point back exactly once; a run
//! interrupted half-way (its marker database, a half-made temporary database and a half-merged
//! database left behind) run again to the same end, with a point written meanwhile kept; and a
//! volume that already holds the databases refused with exit code 3, nothing written.

use std::path::Path;
use std::process::Command;

use iot_operator::controller::desired::backup::RESTORE_SCRIPT;
use iot_testkit::influx::InfluxServer;

const ADMIN: (&str, &str) = ("admin", "admin-pw");
const MARKER: &str = "iot_restore_in_progress";

fn require_influx_tools() {
    for tool in ["influx", "influxd"] {
        let found = Command::new(tool)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success() || !o.stdout.is_empty() || !o.stderr.is_empty());
        assert!(
            found,
            "`{tool}` is missing: install Debian's influxdb and influxdb-client (make packages)"
        );
    }
}

async fn admin(server: &InfluxServer, q: &str) {
    server.query("", q).await;
}

/// The admin, the writer and the reader, as the set-up sidecar makes them before a restore.
async fn target() -> InfluxServer {
    let server = InfluxServer::start_with_auth(ADMIN.0, ADMIN.1).await;
    admin(&server, "CREATE USER writer WITH PASSWORD 'w'").await;
    admin(&server, "CREATE USER reader WITH PASSWORD 'r'").await;
    server
}

fn lines(measurement: &str, place: &str, n: u64, start: u64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{measurement},place={place},sensor=s{} value={}.5 {}\n",
                i % 4,
                i,
                (start + i) * 1_000_000_000
            )
        })
        .collect()
}

/// A portable backup of `dht` (600 points in two measurements) and of `aqi` (50 points), as the
/// backup CronJob's first container makes it: one directory per database.
async fn backup(into: &Path) {
    let source = InfluxServer::start_with_auth(ADMIN.0, ADMIN.1).await;
    for db in ["dht", "aqi"] {
        admin(&source, &format!("CREATE DATABASE {db}")).await;
    }
    source
        .write("dht", &lines("temperature", "before", 300, 1_700_000_000))
        .await;
    source
        .write("dht", &lines("humidity", "before", 300, 1_700_000_000))
        .await;
    source
        .write("aqi", &lines("air_quality", "gb", 50, 1_700_000_000))
        .await;
    for db in ["dht", "aqi"] {
        let out = Command::new("influxd")
            .args(["backup", "-portable", "-db", db, "-host"])
            .arg(format!("127.0.0.1:{}", source.rpc_port()))
            .arg(into.join("data").join(db))
            .output()
            .expect("influxd backup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(into.join("name"), "lab-20270101T000000Z.tar.gz").expect("name");
}

/// Runs the script against `server`; its exit code and termination message.
fn restore(server: &InfluxServer, dir: &Path) -> (i32, String) {
    let script = dir.join("restore.sh");
    std::fs::write(&script, RESTORE_SCRIPT).expect("script");
    let log = dir.join("termination-log");
    let out = Command::new("sh")
        .arg(&script)
        .env("INFLUX_HOST", "127.0.0.1")
        .env("INFLUX_PORT", server.port().to_string())
        .env("INFLUX_RPC_PORT", server.rpc_port().to_string())
        .env("INFLUX_ADMIN_USER", ADMIN.0)
        .env("INFLUX_ADMIN_PASSWORD", ADMIN.1)
        .env("INFLUX_WRITER_USER", "writer")
        .env("INFLUX_READER_USER", "reader")
        .env("INFLUX_DATABASES", "dht aqi")
        .env("RESTORE_DIR", dir)
        .env("TERMINATION_LOG", &log)
        .env("HOME", dir)
        .output()
        .expect("sh");
    let message = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), message.trim().to_owned())
}

async fn databases(server: &InfluxServer) -> Vec<String> {
    let answer = server.query("", "SHOW DATABASES").await;
    answer["results"][0]["series"][0]["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row[0].as_str().map(str::to_owned))
        .collect()
}

async fn count(server: &InfluxServer, db: &str, measurement: &str) -> u64 {
    server.count(db, measurement, "value").await
}

#[tokio::test]
async fn a_backup_is_restored_whole_once_even_when_the_first_run_was_cut_off() {
    require_influx_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    backup(dir.path()).await;

    // A clean restore: every point once, the writer may write, nothing of the restore left.
    let fresh = target().await;
    let (code, message) = restore(&fresh, dir.path());
    assert_eq!(code, 0, "{message}");
    assert!(message.contains(r#""points":650"#), "{message}");
    assert_eq!(count(&fresh, "dht", "temperature").await, 300);
    assert_eq!(count(&fresh, "dht", "humidity").await, 300);
    assert_eq!(count(&fresh, "aqi", "air_quality").await, 50);
    let mut left = databases(&fresh).await;
    left.sort();
    assert_eq!(left, ["aqi", "dht"], "no marker or temporary database left");
    let grants = fresh.query("", "SHOW GRANTS FOR writer").await.to_string();
    assert!(
        grants.contains("dht") && grants.contains("ALL PRIVILEGES"),
        "{grants}"
    );

    // Cut off half-way: the marker, a temporary database with a stray point, and half of dht
    // merged; a reading stored meanwhile by coap-server. Run again: the same end, the reading kept.
    let cut = target().await;
    admin(&cut, &format!("CREATE DATABASE {MARKER}")).await;
    admin(&cut, "CREATE DATABASE dht_restoring").await;
    cut.write(
        "dht_restoring",
        "temperature,place=stray,sensor=x value=9 1600000000000000000\n",
    )
    .await;
    admin(&cut, "CREATE DATABASE dht").await;
    cut.write("dht", &lines("temperature", "before", 120, 1_700_000_000))
        .await;
    cut.write("dht", &lines("temperature", "during", 1, 1_800_000_000))
        .await;
    let (code, message) = restore(&cut, dir.path());
    assert_eq!(code, 0, "{message}");
    assert_eq!(
        count(&cut, "dht", "temperature").await,
        301,
        "300 restored + 1 written meanwhile"
    );
    assert_eq!(count(&cut, "dht", "humidity").await, 300);
    assert_eq!(count(&cut, "aqi", "air_quality").await, 50);
    let stray = cut
        .rows(
            "dht",
            "SELECT count(value) FROM temperature WHERE place = 'stray'",
        )
        .await;
    assert!(
        stray.is_empty(),
        "the stray point of the cut-off run: {stray:?}"
    );
    let mut left = databases(&cut).await;
    left.sort();
    assert_eq!(left, ["aqi", "dht"]);

    // Asked again of a volume that now holds the data: refused, nothing written.
    let (code, message) = restore(&cut, dir.path());
    assert_eq!(code, 3, "{message}");
    assert!(
        message.starts_with("refused: the volume already holds database dht"),
        "{message}"
    );
    assert_eq!(count(&cut, "dht", "temperature").await, 301);
    assert!(!databases(&cut).await.contains(&MARKER.to_owned()));
}
