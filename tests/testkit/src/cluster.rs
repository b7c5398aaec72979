//! The local Kubernetes control plane (`tests/cluster/up.sh`, `make cluster-up`) as integration tests
//! see it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iot_testkit::cluster::ClusterError> {
//! use iot_testkit::cluster::Cluster;
//! let cluster = Cluster::connect().await?; // fails with "run `make cluster-up`" when none is up
//! let ns = cluster.namespace("my-behaviour").await?; // own namespace, deleted when `ns` drops
//! cluster.apply_yaml(Some(ns.name()), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").await?;
//! # Ok(()) }
//! ```
//!
//! The kubeconfig comes from `KUBECONFIG` (its first entry), else `$IOT_CLUSTER_DIR/kubeconfig`, else
//! `<repo>/.run/cluster/kubeconfig`, the path up.sh writes by default. There is deliberately no silent
//! skip: a test that needs the cluster fails and says how to start it. `cargo test --workspace
//! --exclude iot-e2e` runs everything else without a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Client, Config};
use serde::Deserialize as _;

mod paths;
mod waits;

pub use paths::{bin_dir, kubeconfig_path, repo_dir};
pub use waits::{run, wait_condition, wait_for};

/// The field manager of everything the test kit applies.
pub const FIELD_MANAGER: &str = "iot-testkit";
/// Every test namespace carries this label (value `"true"`), so leftovers are easy to find:
/// `kubectl delete namespace -l iot-operator.dev/test`.
pub const TEST_LABEL: &str = "iot-operator.dev/test";
/// kwok's pod annotation for the CPU it reports as the pod's usage (emulated, no real container).
pub const KWOK_USAGE_CPU: &str = "kwok.x-k8s.io/usage-cpu";
/// The name of the test that made the namespace.
pub const TEST_NAME_LABEL: &str = "iot-operator.dev/test-name";

const HINT: &str = "start the local control plane with `make cluster-up` (or `tests/cluster/up.sh`) and \
                    run the `export KUBECONFIG=...` line it prints; `make test` does both. To run the \
                    other tests without a cluster: cargo test --workspace --exclude iot-e2e";

/// What can go wrong while using the cluster from a test.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no local Kubernetes control plane reachable with kubeconfig {path}: {reason}\n  {HINT}"
    )]
    Unreachable { path: PathBuf, reason: String },
    #[error(
        "kubeconfig {path} points at {server}, which is not on this machine; tests only run against a \
         loopback cluster unless IOT_TEST_ALLOW_REMOTE=1"
    )]
    NotLocal { path: PathBuf, server: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("timed out after {secs}s waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        secs: u64,
        last: String,
    },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Tool {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("YAML document {index}: {reason}")]
    Yaml { index: usize, reason: String },
    /// Something that waiting longer cannot fix (a pod that can no longer start, a missing node).
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
}

/// A connection to the local control plane, plus the paths of its kubeconfig and binaries.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// Connects with the kubeconfig described in the module docs and checks the API server answers.
    pub async fn connect() -> Result<Self, ClusterError> {
        Self::connect_to(kubeconfig_path()).await
    }

    /// Connects with the given kubeconfig (e.g. of a second cluster a test started itself).
    pub async fn connect_to(path: PathBuf) -> Result<Self, ClusterError> {
        let unreachable = |reason: String| ClusterError::Unreachable {
            path: path.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(unreachable("the file does not exist".into()));
        }
        let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| unreachable(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let server = config.cluster_url.to_string();
        let local = matches!(
            config.cluster_url.host(),
            Some("127.0.0.1" | "localhost" | "[::1]")
        );
        if !local && std::env::var("IOT_TEST_ALLOW_REMOTE").as_deref() != Ok("1") {
            return Err(ClusterError::NotLocal { path, server });
        }
        let client = Client::try_from(config).map_err(|e| unreachable(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(Self {
                client,
                kubeconfig: path,
            }),
            Ok(Err(e)) => Err(unreachable(format!("{server}: {e}"))),
            Err(_) => Err(unreachable(format!("{server} did not answer within 10s"))),
        }
    }

    /// A client for the cluster (cheap to clone).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client that acts as `user`, through impersonation by this connection's admin: for tests of
    /// what someone with fewer rights may and may not do. `user` has only what RBAC grants it.
    pub async fn client_as(&self, user: &str) -> Result<Client, ClusterError> {
        let unreachable = |reason: String| ClusterError::Unreachable {
            path: self.kubeconfig.clone(),
            reason,
        };
        let kubeconfig =
            Kubeconfig::read_from(&self.kubeconfig).map_err(|e| unreachable(e.to_string()))?;
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        config.auth_info.impersonate = Some(user.to_owned());
        Client::try_from(config).map_err(|e| unreachable(e.to_string()))
    }

    /// The kubeconfig this connection uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A fresh namespace for one test, named after it and deleted when the returned value drops.
    pub async fn namespace(&self, test: &str) -> Result<TestNamespace, ClusterError> {
        self.namespace_with_labels(test, &[]).await
    }

    /// Like [`Cluster::namespace`], with extra labels (for example Pod Security levels).
    ///
    /// Returns once the namespace's `default` ServiceAccount exists, so pods can be created at once
    /// (the ServiceAccount admission plugin rejects them until then).
    pub async fn namespace_with_labels(
        &self,
        test: &str,
        labels: &[(&str, &str)],
    ) -> Result<TestNamespace, ClusterError> {
        let slug = slug(test);
        let mut all: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.insert(TEST_LABEL.into(), "true".into());
        all.insert(TEST_NAME_LABEL.into(), slug.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("t-{}-", truncate(&slug, 40))),
                labels: Some(all),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await?;
        let ns = TestNamespace {
            name: created.metadata.name.unwrap_or_default(),
            kubectl: self.kubectl_std(),
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), &ns.name);
        wait_for(
            &format!("ServiceAccount {}/default", ns.name),
            default_timeout(),
            || async {
                match accounts.get_opt("default").await {
                    Ok(Some(sa)) => Ok(sa),
                    Ok(None) => Err("not created yet".to_string()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        Ok(ns)
    }

    /// Server-side applies every document of a (multi-document) YAML string, in order, and returns
    /// the objects as the server stored them. Namespaced objects without a namespace go to
    /// `namespace` (`None`: the object must name its own). Kinds are resolved through discovery,
    /// so custom resources work once their CRD is Established.
    pub async fn apply_yaml(
        &self,
        namespace: Option<&str>,
        yaml: &str,
    ) -> Result<Vec<DynamicObject>, ClusterError> {
        let mut applied = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let bad = |reason: String| ClusterError::Yaml { index, reason };
            let value = serde_yaml::Value::deserialize(document).map_err(|e| bad(e.to_string()))?;
            if value.is_null() {
                continue; // an empty document, e.g. after a trailing `---`
            }
            let object: DynamicObject =
                serde_yaml::from_value(value).map_err(|e| bad(e.to_string()))?;
            let types = object
                .types
                .as_ref()
                .ok_or_else(|| bad("no apiVersion/kind".into()))?;
            let gvk = GroupVersionKind::try_from(types).map_err(|e| bad(e.to_string()))?;
            let name = object
                .metadata
                .name
                .clone()
                .ok_or_else(|| bad("no metadata.name (server-side apply needs one)".into()))?;
            let (resource, capabilities) = discovery::pinned_kind(&self.client, &gvk).await?;
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Cluster => Api::all_with(self.client(), &resource),
                Scope::Namespaced => {
                    let ns = object
                        .metadata
                        .namespace
                        .as_deref()
                        .or(namespace)
                        .ok_or_else(|| bad(format!("{} {name} needs a namespace", gvk.kind)))?;
                    Api::namespaced_with(self.client(), ns, &resource)
                }
            };
            let params = PatchParams::apply(FIELD_MANAGER).force();
            applied.push(api.patch(&name, &params, &Patch::Apply(&object)).await?);
        }
        Ok(applied)
    }

    /// `kubectl` of the pinned version, pointed at this cluster (`--kubeconfig`, and a discovery cache
    /// of the cluster's own when it is the one up.sh made).
    pub fn kubectl(&self) -> tokio::process::Command {
        tokio::process::Command::from(self.kubectl_std())
    }

    fn kubectl_std(&self) -> std::process::Command {
        let mut command = std::process::Command::new(bin_dir().join("kubectl"));
        command.arg(format!("--kubeconfig={}", self.kubeconfig.display()));
        if let Some(dir) = self.state_dir() {
            command.arg(format!("--cache-dir={}", dir.join("kube-cache").display()));
        }
        command
    }

    /// Sets the CPU that kwok reports for the selected pods (its `usage-cpu` annotation, which
    /// metrics-server and so the HPAs see), with `kubectl annotate` as a user would.
    pub async fn set_emulated_cpu(
        &self,
        namespace: &str,
        selector: &str,
        cpu: &str,
    ) -> Result<(), ClusterError> {
        run(self.kubectl().args([
            "annotate",
            "pods",
            "--namespace",
            namespace,
            "--selector",
            selector,
            &format!("{KWOK_USAGE_CPU}={cpu}"),
            "--overwrite",
        ]))
        .await?;
        Ok(())
    }

    /// `helm` of the pinned version, pointed at this cluster, with its cache, config and data homes
    /// away from the user's.
    pub fn helm(&self) -> tokio::process::Command {
        let home = self
            .state_dir()
            .map(|dir| dir.join("helm"))
            .unwrap_or_else(|| std::env::temp_dir().join("iot-testkit-helm"));
        let mut command = tokio::process::Command::new(bin_dir().join("helm"));
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        command
    }

    /// The state directory of the up.sh cluster this kubeconfig belongs to, if it is one.
    pub fn state_dir(&self) -> Option<PathBuf> {
        let dir = self.kubeconfig.parent()?;
        dir.join(".iot-cluster-state")
            .is_file()
            .then(|| dir.to_path_buf())
    }
}

/// A namespace that belongs to one test. Dropping it deletes the namespace (without waiting), unless
/// the test panicked and `IOT_KEEP_FAILED_NAMESPACES=1` asks to keep it for inspection.
pub struct TestNamespace {
    name: String,
    kubectl: std::process::Command,
}

impl TestNamespace {
    /// The generated name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking()
            && std::env::var("IOT_KEEP_FAILED_NAMESPACES").as_deref() == Ok("1")
        {
            eprintln!("keeping namespace {} of a failed test", self.name);
            return;
        }
        // Drop cannot await and the test's runtime may be shutting down, so a blocking kubectl call
        // (about 0.1 s) is the dependable way; the namespace controller does the rest.
        let deleted = self
            .kubectl
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
        match deleted {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "could not delete namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("could not delete namespace {}: {e}", self.name),
        }
    }
}

pub use crate::wait::default_timeout;

/// CPU of a Kubernetes quantity in millicores: "299994362n", "300m", "1500u", "2" (what metrics-server
/// writes).
pub fn millicores(quantity: &str) -> Option<f64> {
    let (number, scale) = match quantity.char_indices().last()? {
        (i, 'n') => (&quantity[..i], 1e-6),
        (i, 'u') => (&quantity[..i], 1e-3),
        (i, 'm') => (&quantity[..i], 1.0),
        _ => (quantity, 1e3),
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// A DNS-label-safe form of a test name: lowercase alphanumerics and single dashes.
fn slug(test: &str) -> String {
    let mut out = String::new();
    for c in test.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = truncate(&out, 63);
    if out.is_empty() { "test".into() } else { out }
}

/// At most `max` bytes of an ASCII slug, never ending in a dash.
fn truncate(slug: &str, max: usize) -> String {
    slug.chars()
        .take(max)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_a_valid_label_value() {
        assert_eq!(
            slug("deployment_becomes::Available"),
            "deployment-becomes-available"
        );
        assert_eq!(slug("__x__"), "x");
        assert_eq!(slug("!!!"), "test");
        assert_eq!(slug(&"a-".repeat(50)).len(), 63);
        assert!(!slug(&"ab-".repeat(30)).ends_with('-'));
    }

    #[test]
    fn millicores_reads_the_quantities_metrics_server_writes() {
        assert_eq!(millicores("300m"), Some(300.0));
        assert_eq!(millicores("2"), Some(2000.0));
        assert!((millicores("299994362n").unwrap() - 299.994362).abs() < 1e-9);
        assert!((millicores("1500u").unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(millicores("x"), None);
        assert_eq!(millicores(""), None);
    }

    #[test]
    fn generate_name_prefix_leaves_room_for_the_suffix() {
        let long = slug(&"x".repeat(100));
        assert!(format!("t-{}-", truncate(&long, 40)).len() + 5 <= 63);
    }
}
