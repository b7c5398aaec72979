//! A fleet of devices against the real coap-server, in-process over DTLS on loopback, writing
//! to an in-memory sink; between them a relay that notes every source address it sees, as
//! kube-proxy's connection tracking does (each new address is a new flow, which it may send to
//! another pod).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coap_server::devices::{Device, Registry as DeviceRegistry};
use coap_server::{Config, Devices, DtlsConfig, DtlsLimits, Server};
use iot_common::batch::Bytes;
use iot_common::http::Readiness;
use iot_common::{RetryPolicy, Shutdown, Sink, WriteError};
use prometheus_client::registry::Registry;
use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};

use super::*;

const DEVICES: u32 = 20;
const READINGS_EACH: u64 = 3;
const PLACE: &str = "fleet";

/// Loopback timers: fast, yet with room for handshakes on a busy machine.
const TIMERS: Transmission = Transmission {
    ack_timeout: Duration::from_millis(500),
    ack_random_factor: 1.5,
    max_retransmit: 4,
};

/// Keeps the lines it is given.
#[derive(Clone, Default)]
struct MemorySink(Arc<Mutex<Vec<String>>>);

impl MemorySink {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Sink for MemorySink {
    async fn write_batch(&self, body: Bytes, _: &RetryPolicy) -> Result<(), WriteError> {
        let text = String::from_utf8_lossy(&body);
        self.0
            .lock()
            .unwrap()
            .extend(text.lines().map(str::to_owned));
        Ok(())
    }
}

/// coap-server with DTLS for `devices` (name, key) and plaintext closed, as a cluster runs it.
struct InProcess {
    coaps: SocketAddr,
    sink: MemorySink,
    metrics: Registry,
    stop: Shutdown,
    task: JoinHandle<bool>,
}

impl InProcess {
    fn start(devices: &[(String, String)]) -> Self {
        let registry = DeviceRegistry::new(
            devices
                .iter()
                .map(|(name, key)| Device::new(name, PLACE, key.as_bytes()).unwrap()),
        );
        let config = Config {
            plaintext: false,
            dtls: Some(DtlsConfig {
                addr: ([127, 0, 0, 1], 0).into(),
                devices: Devices::new(registry),
                limits: DtlsLimits::default(),
            }),
            ..Config::default()
        };
        let (sink, mut metrics) = (MemorySink::default(), Registry::default());
        let loopback = ([127, 0, 0, 1], 0).into();
        let ready = Readiness::default();
        let server = Server::bind(loopback, sink.clone(), config, &mut metrics, ready).unwrap();
        let coaps = server.dtls_addr().unwrap();
        let stop = Shutdown::new();
        let task = tokio::spawn(server.run(stop.wait(), Duration::from_secs(10)));
        InProcess {
            coaps,
            sink,
            metrics,
            stop,
            task,
        }
    }

    /// A sample of the server's metrics, as /metrics shows it (`name{labels}`), 0 if absent.
    fn metric(&self, sample: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.metrics).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// Readings stored from device `name`.
    fn stored_from(&self, name: &str) -> usize {
        let tags = format!(",place={PLACE},sensor={name} ");
        self.sink
            .lines()
            .iter()
            .filter(|l| l.contains(&tags))
            .count()
    }

    async fn stop(self) -> bool {
        self.stop.trigger();
        self.task.await.unwrap()
    }
}

/// A UDP relay in front of `server` that notes each client address: one upstream socket a
/// client address, as a NAT or kube-proxy keeps one conntrack entry a flow.
struct Relay {
    addr: SocketAddr,
    flows: Arc<Mutex<HashSet<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let flows = Arc::new(Mutex::new(HashSet::new()));
        let seen = flows.clone();
        let task = tokio::spawn(async move {
            let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            // Each copies the server's answers back to its client; gone with the relay.
            let mut answers = JoinSet::new();
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, client)) = front.recv_from(&mut buf).await {
                seen.lock().unwrap().insert(client);
                if let Entry::Vacant(flow) = upstream.entry(client) {
                    let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    up.connect(server).await.unwrap();
                    let (back, front) = (up.clone(), front.clone());
                    answers.spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(n) = back.recv(&mut buf).await {
                            let _ = front.send_to(&buf[..n], client).await;
                        }
                    });
                    flow.insert(up);
                }
                let _ = upstream[&client].send(&buf[..n]).await;
            }
        });
        Relay { addr, flows, task }
    }

    fn flows(&self) -> usize {
        self.flows.lock().unwrap().len()
    }
}

/// `DEVICES` key files `load-1..` in `dir`, and the (name, key) pairs the server knows.
fn key_files(dir: &Path) -> Vec<(String, String)> {
    (1..=DEVICES)
        .map(|i| {
            let (name, key) = (format!("load-{i}"), format!("fleet-key-{i:02}-0123456789"));
            std::fs::write(dir.join(&name), format!("{key}\n")).unwrap();
            (name, key)
        })
        .collect()
}

/// `DEVICES` devices, each sending `READINGS_EACH` readings, one every 0.4 s, through a relay
/// to an in-process server; the summary, the server, and the flows the relay saw.
async fn fleet(new_port_per_reading: bool) -> (Summary, Arc<Stats>, InProcess, Relay) {
    let keys = tempfile::tempdir().unwrap();
    let server = InProcess::start(&key_files(keys.path()));
    let relay = Relay::start(server.coaps).await;
    let shape = Shape::of(
        8,
        Some(DEVICES),
        None,
        None,
        Some(0.4),
        new_port_per_reading,
    )
    .unwrap();
    let keys_dir = Some(keys.path().to_path_buf());
    let plan = LoadPlan {
        server: relay.addr,
        shape,
        count: Some(u64::from(DEVICES) * READINGS_EACH),
        duration: None,
        drain: Duration::from_secs(20),
        place: "ignored".into(),
        json: false,
        devices: devices(keys_dir, None, None, shape.sockets).unwrap(),
    };
    let stats = Arc::new(Stats::default());
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = run(plan, TIMERS, stats.clone(), stop);
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run's time bound")
        .unwrap();
    (summary, stats, server, relay)
}

/// Every device's readings stored, under its own name and the place the registry gives it.
fn assert_all_stored(summary: &Summary, server: &InProcess) {
    let all = u64::from(DEVICES) * READINGS_EACH;
    assert_eq!((summary.readings, summary.acked), (all, all), "{summary:?}");
    assert_eq!((summary.failed, summary.handshakes_failed), (0, 0));
    for i in 1..=DEVICES {
        let name = format!("load-{i}");
        assert_eq!(server.stored_from(&name) as u64, READINGS_EACH, "{name}");
    }
    assert_eq!(server.sink.lines().len() as u64, all);
}

/// Waits until the server holds no DTLS session: every device said close_notify.
async fn until_no_session(server: &InProcess) {
    for _ in 0..50 {
        if server.metric("coap_dtls_sessions") == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} sessions left on the server",
        server.metric("coap_dtls_sessions")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_over_dtls_is_stored_each_device_under_its_own_name_one_flow_each() {
    let (summary, _, server, relay) = fleet(false).await;
    assert_all_stored(&summary, &server);
    // One socket, one session, one flow per device for the whole run.
    assert_eq!(summary.handshakes, u64::from(DEVICES));
    assert_eq!(summary.source_ports, u64::from(DEVICES));
    assert_eq!(relay.flows(), DEVICES as usize);
    assert_eq!(
        server.metric(r#"coap_dtls_handshakes_total{reason="ok"}"#),
        u64::from(DEVICES)
    );
    until_no_session(&server).await;
    assert!(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_new_port_per_reading_every_reading_is_a_new_flow_and_handshake() {
    let (summary, stats, server, relay) = fleet(true).await;
    assert_all_stored(&summary, &server);
    let all = u64::from(DEVICES) * READINGS_EACH;
    assert_eq!(summary.handshakes, all);
    assert_eq!(relay.flows() as u64, all);
    assert_eq!(
        server.metric(r#"coap_dtls_handshakes_total{reason="ok"}"#),
        all
    );
    // A device opens its next socket when its exchange has ended, none after its last
    // reading: one socket a reading.
    assert_eq!((summary.source_ports, stats.source_ports.get()), (all, all));
    // Each old session was closed, none left waiting for the server's idle timeout.
    until_no_session(&server).await;
    assert!(server.stop().await);
}
