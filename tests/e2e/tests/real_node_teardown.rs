//! `tests/cluster/down.sh` removes everything the real node started, also after a crash: a second
//! local cluster (its own state directory, so its own real-node slot) runs a pod with a volume and a
//! Service, its node processes are killed with SIGKILL, and after down.sh nothing of it is left on this
//! machine: processes, network namespaces (the node's and the pods'), veths, routes, iptables chains,
//! mounts, cgroups, volume directories, the state directory and the slot's registration.
//! Needs root (the real node), like the rest of `make test`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use iot_testkit::cluster::{Cluster, repo_dir};
use iot_testkit::leftovers;
use iot_testkit::real_node::{self, BUSYBOX_IMAGE, LOCAL_PATH_CLASS};

/// The kubelet's own chains and kube-proxy's, which must never outlive the node.
const CHAINS: &[&str] = &[
    "KUBE-FIREWALL",
    "KUBE-KUBELET-CANARY",
    "KUBE-IPTABLES-HINT",
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
];

/// A cluster of this test's own, torn down when dropped (also when the test fails half-way).
struct OwnCluster {
    state: PathBuf,
    down: bool,
}

impl OwnCluster {
    fn up(state: PathBuf) -> Result<Self> {
        let out = script("up.sh", &state).output()?;
        let cluster = Self { state, down: false };
        if !out.status.success() {
            bail!("up.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(cluster)
    }

    fn down(&mut self) -> Result<String> {
        self.down = true;
        let out = script("down.sh", &self.state).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(out.status.success(), "down.sh failed:\n{stderr}");
        Ok(stderr)
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if !self.down {
            let _ = script("down.sh", &self.state).status();
        }
    }
}

fn script(name: &str, state: &Path) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(repo_dir().join("tests/cluster").join(name))
        .env("IOT_CLUSTER_DIR", state)
        .env("IOT_CLUSTER_NODES", "1")
        .env_remove("IOT_REAL_NODE");
    command
}

/// Output of a command that must succeed.
fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The chain names an iptables-save dump defines (`:NAME POLICY [..]` lines).
fn chains(dump: &str) -> BTreeSet<String> {
    dump.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn host_chains() -> Result<BTreeSet<String>> {
    let mut all = chains(&output("iptables-save", &[])?);
    all.extend(chains(&output("ip6tables-save", &[])?));
    Ok(all)
}

fn kill_recorded(state: &Path, name: &str) -> Result<()> {
    let record = std::fs::read_to_string(state.join("pids").join(format!("{name}.pid")))
        .with_context(|| format!("{name} was not recorded"))?;
    let pid = record.split_whitespace().next().context("empty PID file")?;
    output("kill", &["-KILL", pid])?;
    Ok(())
}

#[tokio::test]
async fn down_removes_everything_the_real_node_started_even_after_a_crash() -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("iot-teardown-")
        .tempdir_in("/tmp")?;
    let state = tmp.path().join("cluster");
    let chains_before = host_chains()?;
    let mut own = OwnCluster::up(state.clone())?;
    let slot = std::fs::read_to_string(state.join("node/slot"))?
        .trim()
        .to_string();
    let netns = format!("iot-node-{slot}");

    // A pod with a volume (a mount, a helper pod, a volume directory) and a Service (kube-proxy's
    // rules), so there is something of each kind to remove.
    let cluster = Cluster::connect_to(state.join("kubeconfig")).await?;
    let ns = cluster.namespace("real-node-teardown").await?;
    let yaml = format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data}}\nspec: {{accessModes: \
         [ReadWriteOnce], storageClassName: {LOCAL_PATH_CLASS}, resources: {{requests: {{storage: \
         1Mi}}}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: sleeper, labels: {{app: \
         sleeper}}}}\nspec:\n{}  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, \
         image: {BUSYBOX_IMAGE}, imagePullPolicy: Never, command: [sh, -c, 'echo x > /data/x; exec \
         sleep 600'], volumeMounts: [{{name: data, mountPath: /data}}]}}\n  volumes: [{{name: data, \
         persistentVolumeClaim: {{claimName: data}}}}]\n---\napiVersion: v1\nkind: Service\nmetadata: \
         {{name: sleeper}}\nspec: {{type: NodePort, selector: {{app: sleeper}}, ports: [{{port: 80}}]}}\n",
        real_node::scheduling_yaml(2)
    );
    cluster.apply_yaml(Some(ns.name()), &yaml).await?;
    real_node::wait_running(&cluster, ns.name(), "sleeper").await?;

    // Before: each thing the test will look for afterwards is there, so its absence means something.
    let in_node = |tool: &str| output("ip", &["netns", "exec", &netns, tool]);
    let node_chains = {
        let mut c = chains(&in_node("iptables-save")?);
        c.extend(chains(&in_node("ip6tables-save")?));
        c
    };
    for chain in CHAINS {
        ensure!(
            node_chains.contains(*chain),
            "the node has no {chain}: {node_chains:?}"
        );
    }
    let pod_netns = std::fs::read_dir(state.join("node/state/io.containerd.grpc.v1.cri/netns"))
        .context("the pods' network namespaces")?
        .count();
    ensure!(
        pod_netns >= 1,
        "no pod network namespace under the state directory"
    );
    ensure!(
        !leftovers::mounts_under(&state).is_empty(),
        "nothing mounted under {}",
        state.display()
    );
    ensure!(
        !leftovers::cgroup_dirs(&slot).is_empty(),
        "no cgroup iot-node-{slot}"
    );
    ensure!(Path::new(&format!("/run/netns/{netns}")).exists());
    ensure!(output("ip", &["link", "show", &format!("iotn{slot}")]).is_ok());
    ensure!(
        output("ip", &["route", "show", &format!("198.18.{slot}.0/24")])?.contains("iotn"),
        "no route to the node's pods"
    );
    // The whole cluster goes below; deleting the namespace first would only race with the crash.
    std::mem::forget(ns);

    // A crash: the node's processes die without cleaning up.
    for name in ["kubelet", "kube-proxy", "containerd", "api-forward"] {
        kill_recorded(&state, name)?;
    }
    let log = own.down()?;

    // After: nothing is left.
    let mut left = leftovers::left_behind(tmp.path(), &state, Some(&slot));
    let chains_after = host_chains()?;
    for chain in CHAINS {
        if chains_after.contains(*chain) && !chains_before.contains(*chain) {
            left.push(format!("host iptables chain {chain}"));
        }
    }
    ensure!(
        left.is_empty(),
        "left behind: {left:#?}\ndown.sh said:\n{log}"
    );
    Ok(())
}

#[test]
fn chains_reads_iptables_save() {
    let dump =
        "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n";
    assert_eq!(
        chains(dump),
        BTreeSet::from(["INPUT".to_string(), "KUBE-FIREWALL".to_string()])
    );
}
