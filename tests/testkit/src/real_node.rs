//! The local cluster's real node (`tests/cluster/node.sh`): a kubelet with containerd and runc, so a
//! pod scheduled there really runs.
//!
//! The node is tainted, so pods without [`REAL_NODE_TOLERATION`] stay on the kwok nodes, where every
//! image is "present". A pod meant to run for real selects [`REAL_NODE_LABEL`] and tolerates the taint
//! ([`run_on_real_node`] adds both), and uses images that were imported into the node's containerd
//! (`images/build.sh --load`), with `imagePullPolicy: Never` or `IfNotPresent`: the node cannot pull.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iot_testkit::cluster::ClusterError> {
//! use iot_testkit::cluster::Cluster;
//! use iot_testkit::real_node::{self, RealNode};
//! let cluster = Cluster::connect().await?;
//! let node = RealNode::get(&cluster).await?; // fails with a hint when the cluster has none
//! let ns = cluster.namespace("my-behaviour").await?;
//! // ... create a pod whose spec went through real_node::run_on_real_node ...
//! let pod = real_node::wait_running(&cluster, ns.name(), "web").await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, Toleration};
use kube::Api;
use kube::api::LogParams;

use crate::cluster::{Cluster, ClusterError, default_timeout, wait_for};

/// The real node's name.
pub const REAL_NODE: &str = "real-0";
/// The label that selects the real node (the kwok nodes have `type: kwok` instead).
pub const REAL_NODE_LABEL: (&str, &str) = ("iot-operator.dev/node", "real");
/// The key of the real node's `NoSchedule` taint (value `"true"`).
pub const REAL_NODE_TAINT: &str = "iot-operator.dev/real-node";
/// The StorageClass whose volumes are directories on the real node that non-root pods can write
/// (rancher's local-path provisioner; binds when the first pod is scheduled).
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// A busybox image in the node's containerd: `sh` and the usual applets, user root unless the pod says
/// otherwise.
pub const BUSYBOX_IMAGE: &str = "localhost/iot-operator/busybox:1";

const HINT: &str = "the local cluster has no real node: start it as root without IOT_REAL_NODE=0 \
                    (`make cluster-up`, or `make test`)";

/// The toleration of the real node's taint, as YAML for a pod spec's `tolerations:` list.
pub const REAL_NODE_TOLERATION: &str =
    "{key: iot-operator.dev/real-node, operator: Equal, value: \"true\", effect: NoSchedule}";

/// Makes a pod spec land on the real node: selects its label and tolerates its taint.
pub fn run_on_real_node(spec: &mut PodSpec) {
    spec.node_selector
        .get_or_insert_with(BTreeMap::new)
        .insert(REAL_NODE_LABEL.0.into(), REAL_NODE_LABEL.1.into());
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            key: Some(REAL_NODE_TAINT.into()),
            operator: Some("Equal".into()),
            value: Some("true".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
}

/// The YAML lines that put a pod on the real node, to paste under a pod template's `spec:` at the
/// given indentation.
pub fn scheduling_yaml(indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{pad}nodeSelector: {{{}: {}}}\n{pad}tolerations: [{REAL_NODE_TOLERATION}]\n",
        REAL_NODE_LABEL.0, REAL_NODE_LABEL.1
    )
}

/// The flow-style YAML entries that put one IotMonitor component on the real node, for its
/// mapping in the spec: `coap: {serviceType: NodePort, <these>}`.
pub fn component_scheduling() -> String {
    format!(
        "nodeSelector: {{{}: {}}}, tolerations: [{REAL_NODE_TOLERATION}]",
        REAL_NODE_LABEL.0, REAL_NODE_LABEL.1
    )
}

/// The flow-style YAML mapping of an IotMonitor's `influxdb` on the real node: the locally built
/// image, a 64 MiB volume of the cluster's default StorageClass (no class named, as a newcomer
/// writes it), and `extra` entries (`retention: INF`, or empty), for `influxdb: <this>`.
pub fn influxdb_spec(extra: &str) -> Result<String, ClusterError> {
    let image = image_ref("influxdb")?;
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("{extra}, ")
    };
    Ok(format!(
        "{{image: {image}, {extra}storage: {{size: 64Mi}}, {}}}",
        component_scheduling()
    ))
}

/// The YAML of an IotMonitor `lab` whose InfluxDB runs on the real node ([`influxdb_spec`] with
/// `influxdb_extra`), followed by `rest`: the spec's other entries, each line indented two spaces.
pub fn monitor_yaml(influxdb_extra: &str, rest: &str) -> Result<String, ClusterError> {
    Ok(format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: lab}}\n\
         spec:\n  influxdb: {}\n{rest}",
        influxdb_spec(influxdb_extra)?
    ))
}

/// An image's reference as `images/build.sh` builds it and `--load` imports it into the node.
pub fn image_ref(name: &str) -> Result<String, ClusterError> {
    let what = format!("images/build.sh --ref {name}");
    let out = std::process::Command::new(crate::cluster::repo_dir().join("images/build.sh"))
        .args(["--ref", name])
        .output()
        .map_err(|e| ClusterError::Failed {
            what: what.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ClusterError::Failed {
            what,
            reason: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The real node as the API server reports it.
#[derive(Clone, Debug)]
pub struct RealNode {
    /// Its `InternalIP`: where its kubelet and NodePorts listen (reachable from the host).
    pub address: Ipv4Addr,
    /// The node object.
    pub node: Node,
}

impl RealNode {
    /// This machine's address on the node's link (`tests/cluster/node.sh`: the node is `.1` of its
    /// /24, the host end `.254`). Pods reach a server the host binds there, and nothing beyond.
    pub fn host_address(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.address.octets();
        Ipv4Addr::new(a, b, c, 254)
    }

    /// The real node, once it is `Ready`; an error with a hint when the cluster has none.
    pub async fn get(cluster: &Cluster) -> Result<Self, ClusterError> {
        let nodes: Api<Node> = Api::all(cluster.client());
        if nodes.get_opt(REAL_NODE).await?.is_none() {
            return Err(ClusterError::Failed {
                what: format!("node {REAL_NODE}"),
                reason: HINT.into(),
            });
        }
        let node = wait_for(
            &format!("node {REAL_NODE} to be Ready"),
            default_timeout(),
            || {
                let nodes = nodes.clone();
                async move {
                    let node = nodes.get(REAL_NODE).await.map_err(|e| e.to_string())?;
                    let ready = node
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    if ready {
                        Ok(node)
                    } else {
                        Err("not Ready".to_string())
                    }
                }
            },
        )
        .await?;
        let address = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse().ok())
            .ok_or_else(|| ClusterError::Failed {
                what: format!("the InternalIP of node {REAL_NODE}"),
                reason: format!("addresses {:?}", node.status.as_ref().map(|s| &s.addresses)),
            })?;
        Ok(Self { address, node })
    }
}

/// Waits until the pod runs on the real node with every container ready, and returns it. Fails
/// early, with the reason, when a container cannot start (an image that is not on the node, a
/// crash loop) or the pod ends.
pub async fn wait_running(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Pod, ClusterError> {
    wait_running_within(cluster, namespace, name, default_timeout()).await
}

/// [`wait_running`] with an explicit timeout.
pub async fn wait_running_within(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Pod, ClusterError> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), namespace);
    let what = format!("pod {namespace}/{name} to run on {REAL_NODE}");
    // Ok(Err(_)) ends the wait early: the pod can no longer become Running.
    let outcome = wait_for(&what, timeout, || async {
        let pod = pods.get(name).await.map_err(|e| e.to_string())?;
        match pod_state(&pod) {
            PodState::Running => Ok(Ok(pod)),
            PodState::Waiting(why) => Err(why),
            PodState::Hopeless(why) => Ok(Err(why)),
        }
    })
    .await?;
    outcome.map_err(|reason| ClusterError::Failed { what, reason })
}

enum PodState {
    Running,
    Waiting(String),
    Hopeless(String),
}

fn pod_state(pod: &Pod) -> PodState {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    if let Some(node) = node
        && node != REAL_NODE
    {
        return PodState::Hopeless(format!("scheduled to {node}, not {REAL_NODE}"));
    }
    if matches!(phase, "Succeeded" | "Failed") {
        return PodState::Hopeless(format!("phase {phase}: {:?}", status.message));
    }
    let containers = status.container_statuses.unwrap_or_default();
    for c in &containers {
        if let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or("");
            let why = format!("container {}: {reason} {:?}", c.name, waiting.message);
            if matches!(
                reason,
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "ErrImageNeverPull"
                    | "CrashLoopBackOff"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
                    | "InvalidImageName"
            ) {
                return PodState::Hopeless(why);
            }
            return PodState::Waiting(why);
        }
    }
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    if phase == "Running" && all_ready && node == Some(REAL_NODE) {
        PodState::Running
    } else {
        let conditions = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.status != "True")
            .map(|c| format!("{}: {:?}", c.type_, c.message))
            .collect::<Vec<_>>();
        PodState::Waiting(format!("phase {phase}, node {node:?}, {conditions:?}"))
    }
}

/// The logs of one container of a pod (read through the API server, which asks the kubelet).
pub async fn logs(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<String, ClusterError> {
    let pods: Api<Pod> = Api::namespaced(cluster.client(), namespace);
    let params = LogParams {
        container: container.map(str::to_string),
        ..LogParams::default()
    };
    Ok(pods.logs(pod, &params).await?)
}

/// Waits until a container's log contains `needle`, and returns the whole log.
pub async fn wait_log_contains(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    needle: &str,
) -> Result<String, ClusterError> {
    wait_for(
        &format!("the log of {namespace}/{pod} to contain {needle:?}"),
        default_timeout(),
        || async {
            let log = logs(cluster, namespace, pod, None)
                .await
                .map_err(|e| e.to_string())?;
            if log.contains(needle) {
                Ok(log)
            } else {
                Err(format!("log so far: {log:?}"))
            }
        },
    )
    .await
}

/// Restarts the real node's kubelet (`tests/cluster/restart.sh kubelet`), as an upgrade or a crash
/// would, and returns once the node is Ready again. The pods' containers keep running throughout.
pub async fn restart_kubelet(cluster: &Cluster) -> Result<(), ClusterError> {
    let state = cluster.state_dir().ok_or_else(|| ClusterError::Failed {
        what: "restarting the kubelet".into(),
        reason: "the kubeconfig is not one of tests/cluster/up.sh's clusters".into(),
    })?;
    let mut command =
        tokio::process::Command::new(crate::cluster::repo_dir().join("tests/cluster/restart.sh"));
    command.arg("kubelet").env("IOT_CLUSTER_DIR", state);
    crate::cluster::run(&mut command).await.map(drop)
}
