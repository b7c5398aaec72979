//! Offline mode: `--source FILE --dry-run` prints the line protocol it would write, needs no
//! InfluxDB, and exits. Every real sample file goes through it.

use std::path::Path;
use std::process::Command;

use iot_testkit::process::Process;
use iot_testkit::wait::default_timeout;

use crate::common::{FIXTURES, Run, SnapshotFile, fixture, ingestor, run_once};
use crate::upstream::{pm, synthetic};

/// An address nothing listens on: a dry run must not need InfluxDB.
const NO_INFLUX: &str = "http://127.0.0.1:9";

fn dry_run(source: &Path, extra: &[&str]) -> Run {
    let source = source.to_str().expect("UTF-8 path");
    let mut args = vec!["--dry-run", "--source", source, "--influx-url", NO_INFLUX];
    args.extend_from_slice(extra);
    let run = run_once(&args);
    assert!(run.success, "dry run of {source} failed:\n{}", run.stderr);
    run
}

/// A dry run without `--once`, as a new user types it, polling every second (were the file
/// polled again, the run would not end).
fn plain_dry_run(source: &Path) -> Command {
    let mut c = ingestor();
    c.args([
        "--dry-run",
        "--influx-url",
        NO_INFLUX,
        "--poll-seconds",
        "1",
        "--source",
    ])
    .arg(source);
    c
}

#[tokio::test]
async fn a_dry_run_of_a_file_without_once_polls_once_and_exits() {
    let (name, records) = FIXTURES[3];
    let mut run = Process::spawn("aqi-ingestor", &mut plain_dry_run(&fixture(name)));
    let status = run.wait_exit(default_timeout()).await.unwrap();
    let output = run.log();
    assert!(status.success(), "{output}");
    let lines = output.lines().filter(|l| l.starts_with("air_quality,"));
    assert_eq!(lines.count() as u64, records, "{output}");
    assert_eq!(output.matches("poll done").count(), 1, "one poll: {output}");
    assert!(
        !output.contains("serving /metrics"),
        "no side port: {output}"
    );
}

#[test]
fn the_plain_log_has_no_colour_codes_when_stderr_is_not_a_terminal() {
    let run = Run::of(plain_dry_run(&fixture(FIXTURES[3].0)).arg("--once"));
    assert!(run.stderr.contains("poll done"), "{}", run.stderr);
    assert!(
        !run.stderr.contains('\x1b'),
        "ANSI escape codes in a plain log: {:?}",
        run.stderr
    );
}

#[test]
fn every_real_sample_file_parses_completely() {
    for &(name, records) in FIXTURES {
        let run = dry_run(&fixture(name), &[]);
        assert_eq!(run.outcome(), "written", "{name}: {}", run.report);
        assert_eq!(run.u64("records"), records, "{name}");
        assert_eq!(run.u64("written"), records, "{name}: every record is new");
        assert_eq!(
            run.u64("skipped_values"),
            0,
            "{name}: real values are all valid"
        );
        assert_eq!(run.stdout.lines().count() as u64, records, "{name}");
    }
}

#[test]
fn stdout_holds_exactly_the_line_protocol() {
    let run = dry_run(&fixture(FIXTURES[3].0), &[]);
    for line in run.stdout.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "measurement+tags, fields, time: {line}");
        assert!(parts[0].starts_with("air_quality,sensor_id="), "{line}");
        assert!(parts[2].parse::<i64>().is_ok(), "{line}");
    }
    assert!(
        !run.stdout.contains("poll done"),
        "logs go to stderr, not stdout"
    );
}

/// The golden files pin the exact output; after a deliberate change, regenerate them with
/// `UPDATE_GOLDEN=1 cargo test -p aqi-ingestor --test ingestor dry_run::` and review the diff.
#[test]
fn dry_run_output_matches_the_golden_files() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for &(name, _) in FIXTURES {
        let run = dry_run(&fixture(name), &[]);
        let golden = golden_dir.join(format!("{name}.lp"));
        if update {
            std::fs::create_dir_all(&golden_dir).expect("golden dir");
            std::fs::write(&golden, &run.stdout).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", golden.display()));
        if run.stdout != want {
            let first = run.stdout.lines().zip(want.lines()).find(|(a, b)| a != b);
            panic!(
                "{name}: output differs from {}; first difference:\n{first:#?}",
                golden.display()
            );
        }
    }
}

#[test]
fn the_v1_fragment_and_the_wrapped_array_give_the_same_lines() {
    let frag = dry_run(&fixture(FIXTURES[0].0), &[]);
    let wrapped = dry_run(&fixture(FIXTURES[1].0), &[]);
    assert_eq!(frag.stdout, wrapped.stdout);
}

#[test]
fn known_readings_come_out_exactly() {
    let run = dry_run(&fixture(FIXTURES[1].0), &[]);
    let line = |sensor: &str| {
        run.stdout
            .lines()
            .find(|l| l.contains(&format!("sensor_id={sensor},")))
            .unwrap_or_else(|| panic!("no line of sensor {sensor}"))
            .to_string()
    };
    // SDS011 in NL: P1 (PM10) 20.40 → 2, P2 (PM2.5) 14.80 → 2.
    assert_eq!(
        line("6507"),
        "air_quality,sensor_id=6507,location_id=3287,country=NL,sensor_type=SDS011 \
         P1=20.40,P2=14.80,aqi_pm10=2i,aqi_pm25=2i,aqi=2i,latitude=52.2200,longitude=5.2700,\
         origin=\"upstream\" 1555424572000000000"
    );
    // A DHT22: weather only, no index.
    assert_eq!(
        line("468"),
        "air_quality,sensor_id=468,location_id=220,country=DE,sensor_type=DHT22 \
         humidity=64.20,temperature=21.70,latitude=48.7400,longitude=9.3160,origin=\"upstream\" \
         1555424572000000000"
    );
    // The sample's P1 of 665.53 µg/m³ is valid and far into band 10.
    let high = run
        .stdout
        .lines()
        .find(|l| l.contains("P1=665.53"))
        .expect("the P1 665.53 reading");
    assert!(high.contains("aqi_pm10=10i"), "{high}");
}

#[test]
fn numeric_values_and_spaces_in_sensor_names_survive() {
    let run = dry_run(
        &fixture("openhab_sensorcommunity_radiation-result.json"),
        &[],
    );
    let first = run.stdout.lines().next().expect("a line");
    assert!(first.contains("sensor_type=Radiation\\ Si22G "), "{first}");
    assert!(first.contains("counts_per_minute=72,"), "{first}");
    let run = dry_run(
        &fixture("toto_homebridge-airrohr_api_data_temp_bme280.json"),
        &[],
    );
    assert!(
        run.stdout.contains("pressure_at_sealevel=99493.59"),
        "{}",
        run.stdout
    );
}

#[test]
fn thread_count_does_not_change_the_output() {
    // About 4 MB: several windows, so the threads really share the work.
    let file = SnapshotFile::with_body(&synthetic(12_000));
    let one = dry_run(file.path(), &["--threads", "1"]);
    let four = dry_run(file.path(), &["--threads", "4"]);
    assert!(one.u64("written") > 5_000, "{}", one.report);
    assert_eq!(one.stdout, four.stdout);
    assert_eq!(one.report["skipped"], four.report["skipped"]);
    assert_eq!(one.u64("records"), 12_000);
}

#[test]
fn junk_values_are_skipped_and_counted_by_reason() {
    let file = SnapshotFile::new(&[
        pm(1, "2024-01-15 10:00:00", "1999.90", "999.90"),
        pm(2, "2024-01-15 10:00:00", "-1.00", "nan"),
        pm(3, "2024-01-15 10:00:00", "", "unknown"),
        pm(4, "2024-01-15 10:00:00", "11.5", "11.5"),
    ]);
    let run = dry_run(file.path(), &[]);
    assert_eq!(run.u64("records"), 4);
    assert_eq!(run.u64("written"), 1, "only sensor 4 has a valid value");
    assert_eq!(
        run.report["skipped"].as_str(),
        Some("empty=1,non_numeric=1,nan=1,negative=1,out_of_range=2")
    );
    assert!(
        run.stdout
            .contains("P1=11.5,P2=11.5,aqi_pm10=1i,aqi_pm25=2i,aqi=2i"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unreadable_source_fails_the_single_poll() {
    let run = run_once(&[
        "--dry-run",
        "--source",
        "/nonexistent/snapshot.json",
        "--influx-url",
        NO_INFLUX,
    ]);
    assert!(!run.success);
    assert_eq!(run.outcome(), "fetch_error", "{}", run.stderr);
}

#[test]
fn help_documents_every_flag_and_its_variable() {
    let out = ingestor().arg("--help").output().expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--influx-url",
        "INFLUX_URL",
        "INFLUX_USERNAME",
        "INFLUX_PASSWORD",
        "--influx-db",
        "INFLUX_DB",
        "--source",
        "AQI_SOURCE",
        "--poll-seconds",
        "AQI_POLL_SECONDS",
        "--http-addr",
        "HTTP_ADDR",
        "--dry-run",
        "--once",
        "--create-database",
        "CREATE_DATABASE",
        "[default: 300]",
        "[default: aqi]",
        "[default: 24h]",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}
