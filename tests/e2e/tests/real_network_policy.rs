//! The operator's NetworkPolicies, enforced for real: kube-router's firewall runs on the real node
//! (tests/cluster/node.sh), and every connection below crosses the node's bridge through it. An
//! IotMonitor runs InfluxDB, coap-server, the simulator and the AQI ingestor there (Grafana goes to
//! a kwok node: a busybox pod with Grafana's labels stands in for it on the real node). Probe pods
//! then try the paths the policies close and the ones they open, and count what succeeds and what
//! fails.
//!
//! Needs the images in the real node's containerd (`images/build.sh --load`, which `make test`
//! runs) and a cluster with the policy engine (the default; not with IOT_NETWORK_POLICY=0).

use iot_e2e::stack_influx::StackInflux;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use iot_e2e::operator_support::{Operator, install_crd, wait_ready};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{Cluster, default_timeout, repo_dir, run, wait_for};
use iot_testkit::real_node::{self, BUSYBOX_IMAGE, RealNode};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};

/// Attempts per path: enough that one lucky packet cannot pass for a rule.
const ATTEMPTS: u32 = 5;

/// The AQI snapshot the ingestor polls from this machine (real Sensor.Community records).
const SNAPSHOT: &str =
    "workloads/aqi-ingestor/tests/fixtures/basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json";

#[tokio::test]
async fn only_the_stacks_own_paths_pass_the_policies_on_the_real_node() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let node = RealNode::get(&cluster).await?;
    ensure_engine_runs(&node)?;
    install_crd(&cluster).await?;
    let ns = cluster.namespace("real-netpol").await?;
    let other = cluster.namespace("real-netpol-other").await?;

    // The ingestor's upstream, and a decoy on the same host it must not reach. Both count the
    // connections they accept.
    let host = node.host_address();
    let upstream = CountingServer::snapshot(host).await?;
    let decoy = CountingServer::snapshot(host).await?;

    let operator = Operator::start(cluster.client(), ns.name());
    cluster
        .apply_yaml(Some(ns.name()), &monitor_yaml(&upstream.url())?)
        .await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns.name());
    wait_ready(&monitors, "lab").await?;
    for component in ["influxdb", "coap-server", "sensor-sim", "aqi-ingestor"] {
        let pod = pod_of(&cluster, ns.name(), component).await?;
        real_node::wait_running(&cluster, ns.name(), &pod).await?;
    }

    // Grafana runs on kwok: its allow is in the objects, and its stand-in below uses it.
    let policies: Api<NetworkPolicy> = Api::namespaced(cluster.client(), ns.name());
    let influx_policy = serde_json::to_value(policies.get("lab-influxdb").await?.spec)?;
    let admitted: Vec<&str> = influx_policy["ingress"][0]["from"]
        .as_array()
        .context("lab-influxdb admits peers")?
        .iter()
        .filter_map(|p| p["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str())
        .collect();
    ensure!(
        admitted == ["grafana", "coap-server", "aqi-ingestor"],
        "InfluxDB admits {admitted:?}"
    );

    let influx_ip = cluster_ip(&cluster, ns.name(), "lab-influxdb").await?;
    let coap_pod_ip = pod_ip(&cluster, ns.name(), "coap-server").await?;
    let ping = |name: &str, ip: &str| Target::http(name, ip, 8086, "/ping");
    let influx_by_name = Target::http(
        "influxdb-by-name",
        &format!("lab-influxdb.{}.svc.cluster.local", ns.name()),
        8086,
        "/ping",
    );
    let upstream_target = Target::http("upstream", &host.to_string(), upstream.port, "/");
    let decoy_target = Target::http("decoy", &host.to_string(), decoy.port, "/");
    let coap_metrics = Target::http("coap-server-metrics", &coap_pod_ip, 9090, "/metrics");

    let stack = |component: &str| {
        format!(
            "app.kubernetes.io/name: {component}, app.kubernetes.io/instance: lab, \
             app.kubernetes.io/part-of: iot-monitor, app.kubernetes.io/managed-by: iot-operator"
        )
    };
    let probes = [
        // No labels, in the monitor's namespace; it reaches the host, so its network works.
        Probe::new(
            ns.name(),
            "stranger",
            "probe: stranger",
            vec![ping("influxdb", &influx_ip), upstream_target.clone()],
        ),
        // coap-server's labels, copied into another namespace.
        Probe::new(
            other.name(),
            "copycat",
            &stack("coap-server"),
            vec![ping("influxdb", &influx_ip), upstream_target.clone()],
        ),
        // Grafana's stand-in: reaches InfluxDB by name (DNS is open), and nothing else.
        Probe::new(
            ns.name(),
            "grafana-stand-in",
            &stack("grafana"),
            vec![influx_by_name.clone(), upstream_target.clone()],
        ),
        // The AQI ingestor's labels: its upstream and InfluxDB, nothing else.
        Probe::new(
            ns.name(),
            "aqi-stand-in",
            &stack("aqi-ingestor"),
            vec![
                upstream_target.clone(),
                influx_by_name.clone(),
                decoy_target.clone(),
                coap_metrics.clone(),
            ],
        ),
    ];
    for probe in &probes {
        cluster
            .apply_yaml(Some(&probe.namespace), &probe.yaml())
            .await?;
    }
    for probe in &probes {
        real_node::wait_running(&cluster, &probe.namespace, &probe.name).await?;
        wait_for_pod_rules(&node, &probe.namespace, &probe.name).await?;
        start_probe(&cluster, probe).await?;
    }
    let mut counts = BTreeMap::new();
    for probe in &probes {
        for (target, (ok, failed)) in finished_counts(&cluster, probe).await? {
            counts.insert((probe.name.clone(), target), (ok, failed));
        }
    }
    eprintln!("connections (probe, target) -> (succeeded, failed):");
    for (key, value) in &counts {
        eprintln!("  {key:?} -> {value:?}");
    }
    let expect = |probe: &str, target: &str, passes: bool| -> Result<()> {
        let (ok, failed) = counts
            .get(&(probe.to_owned(), target.to_owned()))
            .copied()
            .with_context(|| format!("no count for {probe} -> {target}"))?;
        let want = if passes { (ATTEMPTS, 0) } else { (0, ATTEMPTS) };
        ensure!(
            (ok, failed) == want,
            "{probe} -> {target}: {ok} succeeded, {failed} failed; wanted {want:?}"
        );
        Ok(())
    };
    expect("stranger", "influxdb", false)?;
    expect("stranger", "upstream", true)?;
    expect("copycat", "influxdb", false)?;
    expect("copycat", "upstream", true)?;
    expect("grafana-stand-in", "influxdb-by-name", true)?;
    expect("grafana-stand-in", "upstream", false)?;
    expect("aqi-stand-in", "upstream", true)?;
    expect("aqi-stand-in", "influxdb-by-name", true)?;
    expect("aqi-stand-in", "decoy", false)?;
    expect("aqi-stand-in", "coap-server-metrics", false)?;
    ensure!(
        decoy.accepted() == 0,
        "the decoy accepted {} connection(s)",
        decoy.accepted()
    );

    // The workloads' own paths: the simulator's DTLS readings through coap-server into InfluxDB,
    // and the real ingestor's fetch from its upstream into InfluxDB.
    let influx = Influx::connect(&cluster, ns.name()).await?;
    let readings = wait_for(
        "simulated readings in InfluxDB",
        default_timeout(),
        || async {
            match influx
                .count("dht", "SELECT count(value) FROM temperature")
                .await
            {
                Ok(n) if n > 0 => Ok(n),
                Ok(_) => Err("none yet".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let aqi_points = wait_for(
        "the ingestor's points in InfluxDB",
        default_timeout(),
        || async {
            match influx
                .count("aqi", "SELECT count(latitude) FROM air_quality")
                .await
            {
                Ok(n) if n > 0 => Ok(n),
                Ok(_) => Err("none yet".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    eprintln!(
        "through the policies: {readings} readings from the simulator, {aqi_points} AQI points from \
         {} upstream connection(s)",
        upstream.accepted()
    );
    ensure!(decoy.accepted() == 0, "the decoy was reached");

    operator.stop().await?;
    Ok(())
}

/// The IotMonitor: InfluxDB, coap-server (DTLS, ClusterIP: the namespace may send), the simulator
/// and the ingestor on the real node, the ingestor polling `upstream`.
fn monitor_yaml(upstream: &str) -> Result<String> {
    let on_real_node = real_node::component_scheduling();
    Ok(real_node::monitor_yaml(
        "retention: INF",
        &format!(
            "  coap: {{{on_real_node}}}
  simulator: {{enabled: true, sensors: 2, intervalSeconds: 1, {on_real_node}}}
  aqi: {{enabled: true, source: \"{upstream}\", pollSeconds: 30, {on_real_node}}}
  autoscaling: {{enabled: false}}
"
        ),
    )?)
}

/// The cluster must run the policy engine, or every "refused" below would be a lie.
fn ensure_engine_runs(node: &RealNode) -> Result<()> {
    let out = node_iptables_save(node)?;
    ensure!(
        out.contains("KUBE-ROUTER-FORWARD"),
        "the real node runs no NetworkPolicy engine (no KUBE-ROUTER chains): start the cluster \
         without IOT_NETWORK_POLICY=0"
    );
    Ok(())
}

/// The filter table of the node's network namespace (the tests run as root, like the node).
fn node_iptables_save(node: &RealNode) -> Result<String> {
    let slot = node.address.octets()[2];
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/iot-node-{slot}"))
        .args(["--", "iptables-save", "-t", "filter"])
        .output()
        .context("nsenter iptables-save")?;
    ensure!(
        out.status.success(),
        "iptables-save in the node: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until kube-router has a firewall chain for the pod, so that its first connection is
/// already judged by the policies (before that, kube-router lets a new pod's traffic through).
async fn wait_for_pod_rules(node: &RealNode, namespace: &str, pod: &str) -> Result<()> {
    let needle = format!("POD name:{pod} namespace: {namespace}");
    wait_for(
        &format!("kube-router's rules for {namespace}/{pod}"),
        default_timeout(),
        || async {
            let rules = node_iptables_save(node).map_err(|e| e.to_string())?;
            if rules.contains(&needle) {
                Ok(())
            } else {
                Err("no chain yet".to_string())
            }
        },
    )
    .await?;
    Ok(())
}

/// One path a probe tries: an HTTP request whose answer's status line counts as a success.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn http(name: &str, host: &str, port: u16, path: &str) -> Self {
        Self {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        }
    }
}

/// A busybox pod on the real node that waits for `/tmp/go`, then tries each target
/// [`ATTEMPTS`] times and prints `<target> <succeeded> <failed>` per target, then `done`.
struct Probe {
    namespace: String,
    name: String,
    labels: String,
    targets: Vec<Target>,
}

impl Probe {
    fn new(namespace: &str, name: &str, labels: &str, targets: Vec<Target>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels: labels.to_owned(),
            targets,
        }
    }

    fn script(&self) -> String {
        // busybox's nc, because its static wget crashes in a container (real_node.rs). Its input
        // stays open a moment after the request: on a half-closed connection the test's own HTTP
        // server (hyper) may close without answering.
        let mut script = String::from(
            "until [ -e /tmp/go ]; do sleep 0.2; done\n\
             try() { { printf 'GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' \"$3\" \"$1\"; sleep 0.5; } | nc -w 3 \"$1\" \"$2\" 2>/dev/null | head -n 1 | grep -q '^HTTP/'; }\n",
        );
        for t in &self.targets {
            script.push_str(&format!(
                "ok=0; failed=0; i=0; while [ $i -lt {ATTEMPTS} ]; do \
                 if try {} {} {}; then ok=$((ok+1)); else failed=$((failed+1)); fi; i=$((i+1)); done; \
                 echo \"{} $ok $failed\"\n",
                t.host, t.port, t.path, t.name
            ));
        }
        script.push_str("echo done\nexec sleep 600\n");
        script
    }

    fn yaml(&self) -> String {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
{scheduling}  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]
    volumeMounts: [{{name: tmp, mountPath: /tmp}}]
  volumes: [{{name: tmp, emptyDir: {{}}}}]
"#,
            name = self.name,
            labels = self.labels,
            scheduling = real_node::scheduling_yaml(2),
            script = self.script(),
        )
    }
}

/// Lets a probe begin (its rules are in place).
async fn start_probe(cluster: &Cluster, probe: &Probe) -> Result<()> {
    run(cluster.kubectl().args([
        "exec",
        "--namespace",
        &probe.namespace,
        &probe.name,
        "--",
        // The image has busybox's shell, whose applets need no links in $PATH.
        "sh",
        "-c",
        ": > /tmp/go",
    ]))
    .await?;
    Ok(())
}

/// A probe's counts per target, once it printed them all.
async fn finished_counts(cluster: &Cluster, probe: &Probe) -> Result<BTreeMap<String, (u32, u32)>> {
    let log = wait_for(
        &format!("probe {}/{} to finish", probe.namespace, probe.name),
        default_timeout(),
        || async {
            let log = real_node::logs(cluster, &probe.namespace, &probe.name, None)
                .await
                .map_err(|e| e.to_string())?;
            if log.lines().any(|l| l == "done") {
                Ok(log)
            } else {
                Err(format!("log so far: {log:?}"))
            }
        },
    )
    .await?;
    let mut counts = BTreeMap::new();
    for line in log.lines().filter(|l| *l != "done") {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [target, ok, failed] = fields.as_slice() else {
            bail!("{}: unexpected line {line:?}", probe.name);
        };
        counts.insert((*target).to_owned(), (ok.parse()?, failed.parse()?));
    }
    ensure!(
        counts.len() == probe.targets.len(),
        "{}: counts for {counts:?}, targets {:?}",
        probe.name,
        probe.targets
    );
    Ok(counts)
}

/// An HTTP server on the host's address on the node's link, serving the AQI snapshot at
/// `/data.24h.json` and a short answer elsewhere (the probes), that counts the connections it
/// accepts.
struct CountingServer {
    addr: SocketAddr,
    port: u16,
    accepted: Arc<AtomicU64>,
}

impl CountingServer {
    async fn snapshot(host: Ipv4Addr) -> Result<Self> {
        let body = std::fs::read(repo_dir().join(SNAPSHOT))?;
        let app = axum::Router::new()
            .route(
                "/data.24h.json",
                axum::routing::get(move || {
                    let body = body.clone();
                    async move { ([("content-type", "application/json")], body) }
                }),
            )
            .fallback(|| async { "reached\n" });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((host, 0))).await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let listener = CountingListener {
            inner: listener,
            accepted: counter,
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            addr,
            port: addr.port(),
            accepted,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/data.24h.json", self.addr)
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// A TCP listener that counts what it accepts (axum's `Listener` over tokio's).
struct CountingListener {
    inner: tokio::net::TcpListener,
    accepted: Arc<AtomicU64>,
}

impl axum::serve::Listener for CountingListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        self.accepted.fetch_add(1, Ordering::Relaxed);
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn pod_of(cluster: &Cluster, ns: &str, component: &str) -> Result<String> {
    wait_for(&format!("a {component} pod"), default_timeout(), || async {
        Api::<Pod>::namespaced(cluster.client(), ns)
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/name={component},app.kubernetes.io/instance=lab"
            )))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
            .and_then(|p| p.metadata.name)
            .ok_or_else(|| "none yet".to_string())
    })
    .await
    .map_err(Into::into)
}

async fn pod_ip(cluster: &Cluster, ns: &str, component: &str) -> Result<String> {
    let name = pod_of(cluster, ns, component).await?;
    Api::<Pod>::namespaced(cluster.client(), ns)
        .get(&name)
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .with_context(|| format!("{name} has no IP"))
}

async fn cluster_ip(cluster: &Cluster, ns: &str, service: &str) -> Result<String> {
    Api::<Service>::namespaced(cluster.client(), ns)
        .get(service)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .with_context(|| format!("{service} has no ClusterIP"))
}

/// InfluxDB through its ClusterIP, from this machine (the node, which policies let through).
struct Influx(StackInflux);

impl Influx {
    async fn connect(cluster: &Cluster, ns: &str) -> Result<Self> {
        Ok(Self(
            StackInflux::connect(cluster, ns, Duration::from_secs(5)).await?,
        ))
    }

    async fn count(&self, db: &str, q: &str) -> Result<u64> {
        self.0.first_number(db, q).await
    }
}
