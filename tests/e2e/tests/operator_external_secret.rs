//! No Secret leaves through the spec: someone who may create IotMonitors but may not read
//! Secrets names a Secret as the external InfluxDB's credentials. Until the Secret's owner opts
//! in, nothing of the stack carries it, and the status tells the author what the owner must add;
//! an opted-in Secret without both keys is refused too. Only then do the workloads read it, and
//! when the owner takes the opt-in off again, those workloads go.
//! Against the real API server with RBAC; the pods stay on kwok nodes (nothing is sent anywhere).

use iot_e2e::operator_support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::{default_timeout, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use operator_support::{Operator, condition, setup};
use serde_json::json;

const AUTHOR: &str = "monitor-author";
const PASSWORD: &str = "not-for-monitor-authors";
const LABEL: &str = "iot.operator.dev/allow-external-influxdb";

/// The monitor the author creates: an external InfluxDB on the pod's own loopback (nothing
/// listens there, and nothing leaves the node), with the admin's Secret `ext`.
const MONITOR: &str = "apiVersion: iot.operator.dev/v1alpha1
kind: IotMonitor
metadata: {name: lab}
spec:
  influxdb: {external: {url: 'http://127.0.0.1:9', credentialsSecret: ext}}
  aqi: {enabled: false}
";

#[tokio::test]
async fn a_monitor_author_who_cannot_read_secrets_cannot_make_the_stack_carry_one() -> Result<()> {
    let (cluster, ns) = setup("operator-external-secret").await?;
    let ns = ns.name();
    let admin = cluster.client();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    secrets
        .create(
            &PostParams::default(),
            &secret(&[("username", "writer"), ("password", PASSWORD)]),
        )
        .await?;
    grant_monitors_only(admin.clone(), ns).await?;

    // The author may write IotMonitors, and may not read the Secret.
    let author = cluster.client_as(AUTHOR).await?;
    let refused = Api::<Secret>::namespaced(author.clone(), ns)
        .get("ext")
        .await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "the author must not read Secrets: {refused:?}"
    );
    let monitor: IotMonitor = serde_yaml::from_str(MONITOR)?;
    let monitors: Api<IotMonitor> = Api::namespaced(author.clone(), ns);
    monitors.create(&PostParams::default(), &monitor).await?;

    let operator = Operator::start(admin.clone(), ns);
    // The author reads the status (they may get IotMonitors): it says what the owner must run.
    let (_, message) = wait_degraded(&monitors, "CredentialsNotAllowed").await?;
    ensure!(
        message.contains(&format!("kubectl label secret ext -n {ns} {LABEL}=true")),
        "{message}"
    );
    let carriers = carriers_of_ext(&admin, ns).await?;
    ensure!(
        carriers.naming.is_empty(),
        "not opted in, yet carried by {:?}",
        carriers.naming
    );
    ensure!(
        carriers.workloads == 0,
        "{} workloads built on an unusable Secret",
        carriers.workloads
    );
    ensure!(!message.contains(PASSWORD), "the status holds the password");

    // The owner opts in, but the Secret lacks the password: still nothing, and the status
    // names the key. (The label wakes the monitor at once; no resync is waited for.)
    secrets
        .patch(
            "ext",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {LABEL: "true"}}, "data": {"password": null}}),
            ),
        )
        .await?;
    let (_, message) = wait_degraded(&monitors, "MissingCredentials").await?;
    ensure!(message.contains("no key \"password\""), "{message}");
    let carriers = carriers_of_ext(&admin, ns).await?;
    ensure!(
        carriers.naming.is_empty(),
        "half the credentials carried by {:?}",
        carriers.naming
    );
    ensure!(
        carriers.workloads == 0,
        "{} workloads built on half the credentials",
        carriers.workloads
    );

    // Both keys: now the workloads read it, which shows the checks above could fail.
    let password = ByteString(PASSWORD.as_bytes().to_vec());
    secrets
        .patch(
            "ext",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"password": password}})),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    wait_for(
        "the stack built on the opted-in Secret",
        default_timeout(),
        || async {
            let carriers = carriers_of_ext(&admin, ns)
                .await
                .map_err(|e| e.to_string())?;
            let coap = deployments
                .get_opt("lab-coap-server")
                .await
                .map_err(|e| e.to_string())?;
            match coap {
                Some(_)
                    if carriers
                        .naming
                        .iter()
                        .any(|c| c == "Deployment/lab-coap-server") =>
                {
                    Ok(())
                }
                _ => Err(format!("carriers so far: {:?}", carriers.naming)),
            }
        },
    )
    .await?;
    // Referenced, never copied: no ConfigMap and no other Secret holds the password.
    let carriers = carriers_of_ext(&admin, ns).await?;
    ensure!(
        carriers.copies.is_empty(),
        "the password copied into {:?}",
        carriers.copies
    );
    let readers = carriers.naming.len();

    // The owner takes the label off again: the workloads that read it go (the rest stays), and
    // the status says why. Taking the label off wakes the monitor too.
    secrets
        .patch(
            "ext",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {LABEL: null}}})),
        )
        .await?;
    wait_degraded(&monitors, "CredentialsNotAllowed").await?;
    let left = wait_for(
        "no workload reading the Secret",
        default_timeout(),
        || async {
            let carriers = carriers_of_ext(&admin, ns)
                .await
                .map_err(|e| e.to_string())?;
            let readers: Vec<_> = carriers
                .naming
                .iter()
                .filter(|c| !c.starts_with("Pod/"))
                .collect();
            match readers.is_empty() {
                true => Ok(carriers.workloads),
                false => Err(format!("still reading: {readers:?}")),
            }
        },
    )
    .await?;
    ensure!(
        left >= 1,
        "the simulator, which never reads the Secret, stays ({left} workloads)"
    );
    ensure!(
        readers >= 2,
        "{readers} carriers before the opt-in was taken off"
    );
    operator.stop().await
}

fn secret(data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("ext".into()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

/// A Role that lets [`AUTHOR`] write IotMonitors and read their status, and nothing else.
async fn grant_monitors_only(admin: kube::Client, ns: &str) -> Result<()> {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("monitor-author".into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["iot.operator.dev".into()]),
            resources: Some(vec!["iotmonitors".into(), "iotmonitors/status".into()]),
            verbs: [
                "get", "list", "watch", "create", "update", "patch", "delete",
            ]
            .map(String::from)
            .to_vec(),
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("monitor-author".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "monitor-author".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: AUTHOR.into(),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Waits until `lab`'s `Degraded` is `True` with `reason`; returns its reason and message.
async fn wait_degraded(monitors: &Api<IotMonitor>, reason: &str) -> Result<(String, String)> {
    let found = wait_for(&format!("Degraded={reason}"), default_timeout(), || async {
        let m = monitors.get("lab").await.map_err(|e| e.to_string())?;
        match condition(&m, "Degraded") {
            Some((status, r, message)) if status == "True" && r == reason => Ok((r, message)),
            other => Err(format!("Degraded={other:?}")),
        }
    })
    .await
    .with_context(|| format!("waiting for Degraded={reason}"))?;
    Ok(found)
}

/// Who carries the Secret `ext`, as the admin sees the namespace.
struct Carriers {
    /// Pods, Deployments and StatefulSets whose pod spec takes anything from `ext`.
    naming: Vec<String>,
    /// Deployments and StatefulSets of the stack, whatever they read.
    workloads: usize,
    /// ConfigMaps and Secrets other than `ext` that hold the password.
    copies: Vec<String>,
}

async fn carriers_of_ext(admin: &kube::Client, ns: &str) -> Result<Carriers> {
    let lp = ListParams::default();
    let mut naming = Vec::new();
    let deployments = Api::<Deployment>::namespaced(admin.clone(), ns)
        .list(&lp)
        .await?;
    let stateful_sets = Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .list(&lp)
        .await?;
    let pods = Api::<Pod>::namespaced(admin.clone(), ns).list(&lp).await?;
    let workloads = deployments.items.len() + stateful_sets.items.len();
    for d in &deployments.items {
        let spec = d.spec.template.spec.as_ref();
        if reads_ext(&serde_json::to_value(spec)?) {
            naming.push(format!(
                "Deployment/{}",
                d.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    for s in &stateful_sets.items {
        let spec = s.spec.template.spec.as_ref();
        if reads_ext(&serde_json::to_value(spec)?) {
            naming.push(format!(
                "StatefulSet/{}",
                s.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    for p in &pods.items {
        if reads_ext(&serde_json::to_value(&p.spec)?) {
            naming.push(format!(
                "Pod/{}",
                p.metadata.name.clone().unwrap_or_default()
            ));
        }
    }
    let mut copies = Vec::new();
    for c in Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .list(&lp)
        .await?
        .items
    {
        if serde_json::to_string(&c)?.contains(PASSWORD) {
            copies.push(format!("ConfigMap/{}", c.metadata.name.unwrap_or_default()));
        }
    }
    for s in Api::<Secret>::namespaced(admin.clone(), ns)
        .list(&lp)
        .await?
        .items
    {
        let name = s.metadata.name.clone().unwrap_or_default();
        let holds = s
            .data
            .iter()
            .flat_map(|d| d.values())
            .any(|v| v.0 == PASSWORD.as_bytes());
        if name != "ext" && holds {
            copies.push(format!("Secret/{name}"));
        }
    }
    Ok(Carriers {
        naming,
        workloads,
        copies,
    })
}

/// Whether a pod spec (as JSON) takes an env var, an envFrom or a volume from the Secret `ext`.
fn reads_ext(spec: &serde_json::Value) -> bool {
    match spec {
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| {
            let names_ext = v.get("name").and_then(|n| n.as_str()) == Some("ext")
                || v.get("secretName").and_then(|n| n.as_str()) == Some("ext");
            (matches!(k.as_str(), "secretKeyRef" | "secretRef" | "secret") && names_ext)
                || reads_ext(v)
        }),
        serde_json::Value::Array(items) => items.iter().any(reads_ext),
        _ => false,
    }
}
