//! Every image really runs, without any cluster: unpacked with umoci and run with runc as the
//! image's own user, on a read-only root, with no capabilities.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod support;

use std::time::Duration;

use iot_images::runc::Container;
use iot_images::{archive, built_images, repo_root};
use support::{DnsStub, free_port, http_get, uid_of, wait_for};

/// Generous: the machines running this are loaded.
const T: Duration = Duration::from_secs(120);

#[test]
fn coap_server_starts_as_65532_on_a_read_only_root() {
    let Some(dir) = built_images() else { return };
    let bundle = archive(&dir, "coap-server").unpack().unwrap();
    assert_eq!(uid_of(&bundle), 65532);
    let exit = Container::new(&bundle, Some(&["/usr/local/bin/coap-server", "--help"]))
        .unwrap()
        .run(T)
        .unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
    assert!(
        exit.stdout.contains("Usage: coap-server"),
        "{}",
        exit.stdout
    );
}

#[test]
fn the_operator_image_prints_the_crd_the_repository_holds() {
    let Some(dir) = built_images() else { return };
    let bundle = archive(&dir, "iot-operator").unpack().unwrap();
    assert_eq!(uid_of(&bundle), 65532);
    let exit = Container::new(&bundle, Some(&["/usr/local/bin/iot-operator", "crd"]))
        .unwrap()
        .run(T)
        .unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
    let want = std::fs::read_to_string(repo_root().join("crds/iotmonitor.yaml")).unwrap();
    assert!(
        exit.stdout == want,
        "`iot-operator crd` in the image differs from crds/iotmonitor.yaml"
    );
}

#[test]
fn aqi_ingestor_dry_run_in_the_image_prints_the_golden_line_protocol() {
    let Some(dir) = built_images() else { return };
    let bundle = archive(&dir, "aqi-ingestor").unpack().unwrap();
    let crate_dir = repo_root().join("workloads/aqi-ingestor/tests");
    let name = "toto_homebridge-airrohr_api_data.json";
    let exit = Container::new(
        &bundle,
        Some(&[
            "/usr/local/bin/aqi-ingestor",
            "--once",
            "--dry-run",
            "--source",
            &format!("/data/{name}"),
            "--influx-url",
            "http://127.0.0.1:9",
        ]),
    )
    .unwrap()
    .bind_ro(&crate_dir.join("fixtures"), "/data")
    .run(T)
    .unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
    let golden = std::fs::read_to_string(crate_dir.join(format!("golden/{name}.lp"))).unwrap();
    assert!(!golden.is_empty());
    assert!(
        exit.stdout == golden,
        "stdout differs from the golden file:\n{}",
        exit.stdout
    );
}

/// glibc's getaddrinfo in the image resolves a Service's short name the way a pod does: through
/// resolv.conf's search list (here a DNS stub on a loopback address) after /etc/hosts.
#[test]
fn sensor_sim_resolves_a_service_name_through_the_pods_dns_and_sends_to_it() {
    let Some(dir) = built_images() else { return };
    let bundle = archive(&dir, "sensor-sim").unpack().unwrap();
    let coap = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    coap.set_read_timeout(Some(T)).unwrap();
    let port = coap.local_addr().unwrap().port();
    let service = "coap-server.iot-test.svc.cluster.local";
    let dns = DnsStub::start(service);
    let resolv = bundle.scratch().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "nameserver {}\nsearch iot-test.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5\n",
            dns.ip()
        ),
    )
    .unwrap();
    let hosts = bundle.scratch().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let mut sim = Container::new(
        &bundle,
        Some(&[
            "/usr/local/bin/sensor-sim",
            "--server",
            &format!("coap-server:{port}"),
            "--sensors",
            "1",
            "--interval",
            "0.2",
            "--http-addr",
            &http,
        ]),
    )
    .unwrap()
    .host_network()
    .bind_ro(&resolv, "/etc/resolv.conf")
    .bind_ro(&hosts, "/etc/hosts");
    sim.start().unwrap();
    let mut buf = [0u8; 1500];
    let got = coap.recv_from(&mut buf);
    let (stdout, stderr) = sim.output();
    let (n, _) = got.unwrap_or_else(|e| panic!("no CoAP datagram: {e}\n{stdout}\n{stderr}"));
    assert!(n >= 4 && buf[0] >> 6 == 1, "a CoAP version-1 message");
    assert!(
        dns.answered().iter().any(|q| q == service),
        "resolved through DNS: {:?}",
        dns.answered()
    );
    sim.kill("TERM").unwrap();
    sim.wait(T).unwrap();
}

#[test]
fn pause_stays_up_until_sigterm_then_exits_zero() {
    let Some(dir) = built_images() else { return };
    let bundle = archive(&dir, "pause").unpack().unwrap();
    assert_eq!(uid_of(&bundle), 65535);
    let mut pause = Container::new(&bundle, None).unwrap();
    pause.start().unwrap();
    wait_for(T, "pause running", || pause.status() == "running");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pause.status(), "running", "still up a second later");
    pause.kill("TERM").unwrap();
    let exit = pause.wait(T).unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
}

/// What the volume provisioner's helper pod does: make a world-writable directory, then remove it.
#[test]
fn busybox_makes_and_removes_a_volume_directory() {
    let Some(dir) = built_images() else { return };
    let bundle = archive(&dir, "busybox").unpack().unwrap();
    let script = "mkdir -m 0777 -p /vol/pvc-1/data && ls -ld /vol/pvc-1/data && rm -rf /vol/pvc-1 \
                  && test ! -e /vol/pvc-1 && echo removed";
    let exit = Container::new(&bundle, Some(&["sh", "-c", script]))
        .unwrap()
        .tmpfs("/vol")
        .run(T)
        .unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
    assert!(exit.stdout.starts_with("drwxrwxrwx"), "{}", exit.stdout);
    assert!(exit.stdout.ends_with("removed\n"), "{}", exit.stdout);
}

/// The InfluxDB image with the operator's own command line, and its set-up sidecar script run in
/// a second container of the same image, as the operator's pod does.
#[test]
fn influxdb_image_serves_and_the_operators_setup_script_configures_it() {
    let Some(dir) = built_images() else { return };
    let a = archive(&dir, "influxdb");
    let server_bundle = a.unpack().unwrap();
    assert_eq!(uid_of(&server_bundle), 1000);
    let port = free_port();
    let rpc = free_port();
    let mut influxd = Container::new(&server_bundle, Some(&["influxd"]))
        .unwrap()
        .host_network()
        .tmpfs("/var/lib/influxdb")
        .tmpfs("/tmp")
        .env("INFLUXDB_HTTP_AUTH_ENABLED=true")
        .env(&format!("INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:{port}"))
        .env(&format!("INFLUXDB_BIND_ADDRESS=127.0.0.1:{rpc}"))
        .env("INFLUXDB_META_DIR=/var/lib/influxdb/meta")
        .env("INFLUXDB_DATA_DIR=/var/lib/influxdb/data")
        .env("INFLUXDB_DATA_WAL_DIR=/var/lib/influxdb/wal");
    influxd.start().unwrap();
    wait_for(T, "influxd /ping", || {
        http_get(port, "/ping").is_ok_and(|r| r.starts_with("HTTP/1.0 204"))
    });

    let setup_bundle = a.unpack().unwrap();
    // The setup ConfigMap's two keys, with a downsampling tier: its backfill runs the image's
    // busybox tools (date, among them).
    let setup_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("operator/src/controller/desired/influxdb-setup.sh"),
        setup_dir.path().join("setup.sh"),
    )
    .unwrap();
    std::fs::write(setup_dir.path().join("plan"), setup_plan()).unwrap();
    let setup_dir = setup_dir.path().to_owned();
    let mut setup = Container::new(&setup_bundle, Some(&["/bin/sh", "/setup/setup.sh"]))
        .unwrap()
        .host_network()
        .tmpfs("/tmp")
        .bind_ro(&setup_dir, "/setup");
    for kv in [
        format!("INFLUX_PORT={port}"),
        "INFLUX_ADMIN_USER=admin".into(),
        "INFLUX_ADMIN_PASSWORD=admin-pw".into(),
        "INFLUX_WRITER_USER=writer".into(),
        "INFLUX_WRITER_PASSWORD=writer-pw".into(),
        "INFLUX_READER_USER=reader".into(),
        "INFLUX_READER_PASSWORD=reader-pw".into(),
        "SETUP_PLAN=/setup/plan".into(),
    ] {
        setup = setup.env(&kv);
    }
    setup.start().unwrap();
    wait_for(T, "the set-up script to finish", || {
        setup
            .output()
            .0
            .contains("InfluxDB users and databases are set up")
    });
    // The sidecar's readiness probe, exec'd in the container as the kubelet does.
    assert_eq!(
        setup.exec(&["test", "-f", "/tmp/setup-done"]).unwrap(),
        Some(0)
    );
    let dbs = http_get(port, "/query?u=reader&p=reader-pw&q=SHOW+DATABASES").unwrap();
    assert!(dbs.contains("\"iot\"") && dbs.contains("\"aqi\""), "{dbs}");
    wait_for(T, "the tiers' backfill", || {
        let out = setup.output().0;
        out.contains("backfilled ds_5m on iot") && out.contains("backfilled ds_5m on aqi")
    });
    // The script traps TERM and stops at once.
    setup.kill("TERM").unwrap();
    assert_eq!(setup.wait(T).unwrap().code, Some(0));
    influxd.kill("TERM").unwrap();
    influxd.wait(T).unwrap();
}

/// The plan the operator renders for databases `iot` and `aqi` with a 5-minute tier.
fn setup_plan() -> String {
    use iot_operator::controller::{desired, validate};
    let spec =
        "{influxdb: {databases: {dht: iot, aqi: aqi}, downsampling: [{every: 5m, keep: 1w}]}}";
    let mut monitor =
        iot_operator::crd::IotMonitor::new("lab", serde_yaml::from_str(spec).unwrap());
    monitor.metadata.namespace = Some("iot".into());
    monitor.metadata.uid = Some("uid".into());
    let model = validate::validate(&monitor, &Default::default()).unwrap();
    let objects = desired::build(&model);
    let setup = objects
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("lab-influxdb-setup"))
        .unwrap();
    setup.data.as_ref().unwrap()[desired::influxdb::PLAN_KEY].clone()
}
