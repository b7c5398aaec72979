//! Pods that really run: the local cluster's real node (containerd, runc, CNI bridge, kubelet and
//! kube-proxy; `tests/cluster/node.sh`) runs restricted pods that write to their volumes, serves their
//! Services, and reports their real CPU to metrics-server. Needs `make cluster-up` as root (the real
//! node is on by default).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use iot_testkit::cluster::{Cluster, default_timeout, millicores, run, wait_for};
use iot_testkit::real_node::{self, BUSYBOX_IMAGE, LOCAL_PATH_CLASS, REAL_NODE, RealNode};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::Api;

/// The local cluster's default StorageClass (kube-controller-manager's hostPath provisioner).
const DEFAULT_CLASS: &str = "standard";

/// The labels of a namespace that enforces the `restricted` Pod Security Standard.
const RESTRICTED: &[(&str, &str)] = &[
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
];

/// The pod- and container-level security contexts `restricted` asks for, with a numeric user.
const POD_SECURITY: &str = "{runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, \
                            fsGroup: 10001, seccompProfile: {type: RuntimeDefault}}";
const CONTAINER_SECURITY: &str = "{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, \
                                  capabilities: {drop: [ALL]}}";

/// A busybox pod on the real node running `script` under `restricted`, with `extra` appended to
/// the container (indented by 4) and `volumes` to the pod spec (indented by 2).
fn busybox_pod(name: &str, labels: &str, script: &str, extra: &str, volumes: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
{scheduling}  securityContext: {POD_SECURITY}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]
    securityContext: {CONTAINER_SECURITY}
{extra}{volumes}"#,
        scheduling = real_node::scheduling_yaml(2),
    )
}

#[tokio::test]
async fn a_restricted_pod_on_the_real_node_writes_to_its_volume() -> Result<()> {
    restricted_pod_writes_to_a_volume("real-node-volume", Some(LOCAL_PATH_CLASS)).await
}

/// The claim names no class, as a newcomer's IotMonitor does: the cluster's default class
/// (hostPath, root-owned directories) is made writable by the node (`volume-modes`).
#[tokio::test]
async fn a_restricted_pod_on_the_real_node_writes_to_a_volume_of_the_default_class() -> Result<()> {
    restricted_pod_writes_to_a_volume("real-node-default-volume", None).await
}

/// A busybox pod under `restricted` writes its claim of `class` (`None`: the default class),
/// and what it wrote is in the volume's directory on this machine.
async fn restricted_pod_writes_to_a_volume(namespace: &str, class: Option<&str>) -> Result<()> {
    let cluster = Cluster::connect().await?;
    RealNode::get(&cluster).await?;
    let ns = cluster.namespace_with_labels(namespace, RESTRICTED).await?;
    let pod = busybox_pod(
        "writer",
        "app: writer",
        "echo \"written by $(id -u)\" > /data/proof && cat /data/proof && \
         if touch /root-write 2>/dev/null; then echo root-writable; else echo root-read-only; fi; \
         exec sleep 600",
        "    volumeMounts: [{name: data, mountPath: /data}]\n",
        "  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n",
    );
    cluster
        .apply_yaml(
            Some(ns.name()),
            &format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data}}\nspec: \
                 {{accessModes: [ReadWriteOnce], {class_entry}\
                 resources: {{requests: {{storage: 16Mi}}}}}}\n---\n{pod}",
                class_entry = class
                    .map(|c| format!("storageClassName: {c}, "))
                    .unwrap_or_default()
            ),
        )
        .await?;

    real_node::wait_running(&cluster, ns.name(), "writer").await?;
    // The second line ("root-...") comes last: waiting for it sees both.
    let log = real_node::wait_log_contains(&cluster, ns.name(), "writer", "root-").await?;
    ensure!(log.contains("written by 10001"), "log: {log:?}");
    ensure!(
        log.contains("root-read-only"),
        "the root filesystem was writable: {log:?}"
    );

    // The claim is bound to a volume of the class asked for, whose directory on this machine
    // holds what the pod wrote.
    let claim = Api::<PersistentVolumeClaim>::namespaced(cluster.client(), ns.name())
        .get("data")
        .await?;
    let volume = claim
        .spec
        .and_then(|s| s.volume_name)
        .context("the claim is not bound")?;
    let pv = Api::<PersistentVolume>::all(cluster.client())
        .get(&volume)
        .await?;
    let spec = pv.spec.context("PV without spec")?;
    ensure!(
        spec.storage_class_name.as_deref() == Some(class.unwrap_or(DEFAULT_CLASS)),
        "{:?}",
        spec.storage_class_name
    );
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .context("PV has neither hostPath nor local")?;
    let proof = std::fs::read_to_string(format!("{path}/proof"))
        .with_context(|| format!("reading {path}/proof on the node"))?;
    ensure!(proof.trim() == "written by 10001", "{proof:?}");
    Ok(())
}

#[tokio::test]
async fn cluster_ip_and_node_port_services_answer_from_a_real_pod() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let node = RealNode::get(&cluster).await?;
    let ns = cluster
        .namespace_with_labels("real-node-services", RESTRICTED)
        .await?;
    // busybox httpd serves the pod's name; the kubelet's readiness probe gates the endpoints.
    let web = busybox_pod(
        "web",
        "app: web",
        "echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www",
        "    ports: [{containerPort: 8080}]\n    readinessProbe: {httpGet: {path: /, port: 8080}, \
         periodSeconds: 1}\n    volumeMounts: [{name: www, mountPath: /www}]\n",
        "  volumes: [{name: www, emptyDir: {}}]\n",
    );
    let services = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, \
                    ports: [{port: 80, targetPort: 8080}]}\n---\napiVersion: v1\nkind: Service\n\
                    metadata: {name: web-nodeport}\nspec: {type: NodePort, selector: {app: web}, \
                    ports: [{port: 80, targetPort: 8080}]}\n";
    cluster
        .apply_yaml(Some(ns.name()), &format!("{web}---\n{services}"))
        .await?;
    real_node::wait_running(&cluster, ns.name(), "web").await?;

    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let cluster_ip = services
        .get("web")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?;
    let node_port = services
        .get("web-nodeport")
        .await?
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .context("no nodePort")?;

    // From this machine, through kube-proxy's rules in the node's network namespace.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    for url in [
        format!("http://{cluster_ip}/"),
        format!("http://{}:{node_port}/", node.address),
    ] {
        let body = wait_for(&format!("GET {url}"), default_timeout(), || async {
            let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response.text().await.map_err(|e| e.to_string())?;
            if status.is_success() {
                Ok(body)
            } else {
                Err(format!("{status}: {body}"))
            }
        })
        .await?;
        ensure!(body.trim() == "hello from web", "{url} answered {body:?}");
    }

    // From another pod on the same bridge, through the ClusterIP (the path a workload takes to a
    // Service of its neighbour). busybox's nc, because its static wget crashes in a container.
    let client = busybox_pod(
        "client",
        "app: client",
        &format!(
            "i=0; while [ $i -lt 60 ]; do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {cluster_ip} 80 \
             | grep -q 'hello from web' && echo reached && exit 0; i=$((i+1)); sleep 1; done; exit 1"
        ),
        "",
        "  restartPolicy: Never\n",
    );
    cluster.apply_yaml(Some(ns.name()), &client).await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    wait_for("the client pod to finish", default_timeout(), || async {
        let pod = pods.get("client").await.map_err(|e| e.to_string())?;
        match pod.status.and_then(|s| s.phase).as_deref() {
            Some("Succeeded") => Ok(()),
            Some("Failed") => Ok(()), // the log below says why
            phase => Err(format!("phase {phase:?}")),
        }
    })
    .await?;
    let log = real_node::logs(&cluster, ns.name(), "client", None).await?;
    ensure!(
        log.trim() == "reached",
        "the client pod did not reach the ClusterIP {cluster_ip}: {log:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_metrics_api_reports_the_real_cpu_of_a_real_pod() -> Result<()> {
    let cluster = Cluster::connect().await?;
    RealNode::get(&cluster).await?;
    let ns = cluster
        .namespace_with_labels("real-node-metrics", RESTRICTED)
        .await?;
    // A shell loop, bounded in count (about a minute of one core), capped at half a core.
    let burner = busybox_pod(
        "burner",
        "app: burner",
        "i=0; while [ $i -lt 50000000 ]; do i=$((i+1)); done; exec sleep 600",
        "    resources: {requests: {cpu: 100m, memory: 16Mi}, limits: {cpu: 500m, memory: 32Mi}}\n",
        "",
    );
    cluster.apply_yaml(Some(ns.name()), &burner).await?;
    real_node::wait_running(&cluster, ns.name(), "burner").await?;

    // metrics-server scrapes the kubelet every 10 s and needs two scrapes for a rate.
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods/burner",
        ns.name()
    );
    let cpu = wait_for(
        "metrics.k8s.io to report at least 200m CPU for the burner",
        default_timeout() * 2,
        || async {
            let raw = run(cluster.kubectl().args(["get", "--raw", &path]))
                .await
                .map_err(|e| e.to_string())?;
            let value: serde_json::Value = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
            let cpu = value["containers"][0]["usage"]["cpu"]
                .as_str()
                .and_then(millicores)
                .ok_or_else(|| format!("no CPU in {raw}"))?;
            if cpu >= 200.0 {
                Ok(cpu)
            } else {
                Err(format!("{cpu}m"))
            }
        },
    )
    .await?;
    // The limit holds: a CFS quota of half a core (plus the rate's jitter).
    ensure!(cpu <= 650.0, "{cpu}m is above the 500m limit");

    // What a user sees: `kubectl top pod`, and the node's own figure.
    let top =
        run(cluster
            .kubectl()
            .args(["top", "pod", "burner", "--no-headers", "-n", ns.name()]))
        .await?;
    let shown = top
        .split_whitespace()
        .nth(1)
        .and_then(millicores)
        .with_context(|| format!("kubectl top pod printed {top:?}"))?;
    ensure!(shown >= 100.0, "kubectl top pod shows {top:?}");
    // The node's own point comes from its root cgroup; metrics-server drops a scrape's point now
    // and then (equal timestamps), so it is waited for rather than read once.
    wait_for(
        "kubectl top node to show the real node",
        default_timeout(),
        || async {
            let top = run(cluster
                .kubectl()
                .args(["top", "node", REAL_NODE, "--no-headers"]))
            .await
            .map_err(|e| e.to_string())?;
            if top.starts_with(REAL_NODE) {
                Ok(())
            } else {
                Err(top)
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_cluster_dns_names_services_and_nothing_outside_the_cluster() -> Result<()> {
    let cluster = Cluster::connect().await?;
    RealNode::get(&cluster).await?;
    let ns = cluster
        .namespace_with_labels("real-node-dns", RESTRICTED)
        .await?;
    // A Service needs no pods to have a name and a ClusterIP.
    cluster
        .apply_yaml(
            Some(ns.name()),
            "apiVersion: v1\nkind: Service\nmetadata: {name: probe}\nspec: {ports: [{port: 80}]}\n",
        )
        .await?;
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let probe_ip = services
        .get("probe")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP")?;
    let kubernetes_ip = Api::<Service>::namespaced(cluster.client(), "default")
        .get("kubernetes")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the kubernetes Service has no ClusterIP")?;

    // Each lookup prints `name=<last address>`; an outside name must fail, here and at once.
    let names = format!(
        "probe.{ns}.svc.cluster.local kubernetes.default.svc.cluster.local",
        ns = ns.name()
    );
    let resolver = busybox_pod(
        "resolver",
        "app: resolver",
        &format!(
            "for n in {names}; do echo \"$n=$(nslookup $n 2>&1 | sed -n 's/^Address: *//p' | tail -n 1)\"; done; \
             if nslookup example.com >/dev/null 2>&1; then echo outside=resolved; else echo outside=failed; fi"
        ),
        "",
        "  restartPolicy: Never\n",
    );
    cluster.apply_yaml(Some(ns.name()), &resolver).await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    wait_for("the resolver pod to finish", default_timeout(), || async {
        let pod = pods.get("resolver").await.map_err(|e| e.to_string())?;
        match pod.status.and_then(|s| s.phase).as_deref() {
            Some("Succeeded" | "Failed") => Ok(()),
            phase => Err(format!("phase {phase:?}")),
        }
    })
    .await?;
    let log = real_node::logs(&cluster, ns.name(), "resolver", None).await?;
    let line = |prefix: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
    };
    ensure!(
        line(&format!("probe.{}.svc.cluster.local=", ns.name())).as_deref() == Some(&probe_ip),
        "the Service probe ({probe_ip}) did not resolve: {log:?}"
    );
    ensure!(
        line("kubernetes.default.svc.cluster.local=").as_deref() == Some(&kubernetes_ip),
        "the kubernetes Service ({kubernetes_ip}) did not resolve: {log:?}"
    );
    ensure!(
        line("outside=").as_deref() == Some("failed"),
        "a name outside the cluster resolved: {log:?}"
    );
    Ok(())
}
