//! CoAP load: sensor-sim's load mode as a Job in the monitor's namespace, sending to the
//! coap-server Service: a fleet of devices over DTLS, their keys mounted from the monitor's
//! devices Secret, or in plaintext a few sockets with a window each. The Job is built by a pure
//! function; the command creates it, follows
//! its pod's log (`sensor-sim load --json` prints a JSON progress line a second), and deletes
//! it at the end. A Job left behind by a killed command still ends (activeDeadlineSeconds)
//! and goes away (ttlSecondsAfterFinished).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, TryStreamExt};
use iot_common::load_progress::Progress;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use tokio::sync::watch;

// The restricted Pod Security Standard, exactly as the operator's own pods have it.
use iot_operator::constants::WORKLOAD_UID;
use iot_operator::controller::desired::pod::{container_security, pod_security};
use iot_operator::crd::SchedulingSpec;

use super::devices::LoadDevices;
use super::meter::LoadMeter;
use super::profile::CoapProfile;

/// Label value (`app.kubernetes.io/name`) of what `loadtest` creates.
pub const COMPONENT: &str = "loadtest";
/// Seconds a reading may still take after the sending phase (sensor-sim's `--drain`).
pub const DRAIN_SECONDS: u64 = 10;
/// Where the load pod finds its devices' keys, one file a device.
const KEYS_DIR: &str = "/var/run/iot/devices";

/// How the Job's sensor-sim sends.
#[derive(Debug, Clone, PartialEq)]
pub enum CoapLoad {
    /// Plaintext CoAP: the profile's sockets, each with its window, paced at its rate.
    Plaintext,
    /// Devices over DTLS, each with its own key, socket and schedule (the profile's rate spread
    /// over them), their keys from the monitor's devices Secret.
    Devices {
        devices: LoadDevices,
        /// Every reading from a new source port, so a new flow for kube-proxy.
        new_port_per_reading: bool,
    },
}

/// Everything the Job depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct JobParams {
    pub name: String,
    pub namespace: String,
    /// The IotMonitor's name (the `app.kubernetes.io/instance` label).
    pub instance: String,
    pub image: String,
    /// `host:port` of the coap-server Service.
    pub server: String,
    pub load: CoapLoad,
    pub profile: CoapProfile,
    /// How long to send (the profile's duration, cut to `--duration`).
    pub send_for: Duration,
    /// Where the load pod may run: the monitor's simulator scheduling, so the load comes from
    /// where the monitor's own sensors would (a real node, not an emulated one).
    pub scheduling: SchedulingSpec,
}

/// The load Job (pure).
pub fn job(p: &JobParams) -> Job {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), COMPONENT.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), p.instance.clone()),
        (
            "app.kubernetes.io/part-of".to_owned(),
            "iot-monitor".to_owned(),
        ),
        // Not the operator's manager label: the operator deletes unwanted children it manages.
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "iot-operator-loadtest".to_owned(),
        ),
    ]);
    let send = p.send_for.as_secs_f64();
    let mut args = vec!["load".to_owned(), "--json".to_owned()];
    let mut flag = |name: &str, value: Option<String>| {
        args.push(format!("--{name}"));
        args.extend(value);
    };
    flag("duration", Some(format!("{send:.1}")));
    match &p.load {
        CoapLoad::Plaintext => {
            flag("rate", Some(p.profile.rate.to_string()));
            flag("sockets", Some(p.profile.sockets.to_string()));
            flag("window", Some(p.profile.window.to_string()));
            flag("drain", Some(DRAIN_SECONDS.to_string()));
            flag("place", Some(COMPONENT.to_owned()));
        }
        CoapLoad::Devices {
            devices,
            new_port_per_reading,
        } => {
            let n = devices.names.len();
            flag("devices", Some(n.to_string()));
            // The profile's rate over all devices: each sends one reading every n / rate s.
            flag("interval", Some((n as f64 / p.profile.rate).to_string()));
            if *new_port_per_reading {
                flag("new-port-per-reading", None);
            }
            flag("keys-dir", Some(KEYS_DIR.to_owned()));
            flag("drain", Some(DRAIN_SECONDS.to_string()));
        }
    }
    let (volumes, mounts) = keys_volume(&p.load);
    let env = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let container = Container {
        name: "sensor-sim".into(),
        image: Some(p.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vec![env("COAP_SERVER", &p.server), env("RUST_LOG", "warn")]),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("100m", "32Mi")),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("256Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(container_security()),
        volume_mounts: mounts,
        ..Container::default()
    };
    // Sending, the drain, and a minute to pull the image and start.
    let deadline = p.send_for.as_secs() + DRAIN_SECONDS + 60;
    Job {
        metadata: ObjectMeta {
            name: Some(p.name.clone()),
            namespace: Some(p.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::try_from(deadline).unwrap_or(i64::MAX)),
            ttl_seconds_after_finished: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    security_context: Some(pod_security(WORKLOAD_UID)),
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    volumes,
                    node_selector: (!p.scheduling.node_selector.is_empty())
                        .then(|| p.scheduling.node_selector.clone()),
                    tolerations: (!p.scheduling.tolerations.is_empty())
                        .then(|| p.scheduling.tolerations.clone()),
                    affinity: p.scheduling.affinity.clone(),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The devices' keys, exactly those of the load's devices, read-only; the pod does not start
/// without them (`optional: false`). Readable by the pod's group only (its fsGroup).
fn keys_volume(load: &CoapLoad) -> (Option<Vec<Volume>>, Option<Vec<VolumeMount>>) {
    let CoapLoad::Devices { devices, .. } = load else {
        return (None, None);
    };
    let items = devices
        .names
        .iter()
        .map(|name| KeyToPath {
            key: name.clone(),
            path: name.clone(),
            ..KeyToPath::default()
        })
        .collect();
    let volume = Volume {
        name: "devices".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(devices.secret.clone()),
            items: Some(items),
            default_mode: Some(0o440),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: "devices".into(),
        mount_path: KEYS_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (Some(vec![volume]), Some(vec![mount]))
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot create the load Job: {0}")]
    Create(#[source] kube::Error),
    #[error("the load Job's pod did not start within {0:?}{1}")]
    NoPod(Duration, String),
    #[error("cannot read the load Job's log: {0}")]
    Log(#[source] kube::Error),
    #[error("the load Job's log had no progress line (pod phase {0:?}): sensor-sim did not run")]
    NoProgress(Option<String>),
}

/// How the Job ended, as far as the command saw.
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    pub last: Option<Progress>,
    /// The pod's phase when the log ended (Succeeded, Failed, ...).
    pub pod_phase: Option<String>,
}

/// Creates the Job, follows its log into `meter` until the load ends, the deadline passes or
/// `stop` turns true. Does not delete the Job: [`delete`] does, whatever happened here.
pub async fn run(
    client: kube::Client,
    params: &JobParams,
    meter: Arc<LoadMeter>,
    mut stop: watch::Receiver<bool>,
    deadline: Instant,
) -> Result<JobOutcome, JobError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &params.namespace);
    let pods: Api<Pod> = Api::namespaced(client, &params.namespace);
    jobs.create(&PostParams::default(), &job(params))
        .await
        .map_err(JobError::Create)?;
    tracing::info!(job = %params.name, server = %params.server, "load Job created");

    let selector =
        ListParams::default().labels(&format!("batch.kubernetes.io/job-name={}", params.name));
    let wait_start = Instant::now();
    let pod = loop {
        let listed = pods.list(&selector).await.ok();
        let pod = listed.and_then(|l| l.items.into_iter().next());
        let phase = pod
            .as_ref()
            .and_then(|p| p.status.as_ref()?.phase.clone())
            .unwrap_or_default();
        if let Some(pod) = pod.filter(|_| phase != "Pending" && !phase.is_empty()) {
            break pod;
        }
        if Instant::now() >= deadline || *stop.borrow() {
            return Err(JobError::NoPod(
                wait_start.elapsed(),
                format!(" (pod phase {phase:?})"),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let lp = LogParams {
        follow: true,
        container: Some("sensor-sim".into()),
        ..LogParams::default()
    };
    let mut outcome = JobOutcome::default();
    let reader = pods
        .log_stream(&pod_name, &lp)
        .await
        .map_err(JobError::Log)?;
    let mut lines = reader.lines();
    let until = tokio::time::Instant::from_std(deadline);
    loop {
        let line = tokio::select! {
            l = lines.try_next() => l,
            () = tokio::time::sleep_until(until) => break,
            _ = stop.wait_for(|s| *s) => break,
        };
        match line {
            Ok(Some(line)) => {
                if let Some(p) = Progress::from_line(&line) {
                    meter.report(p.readings, p.acked, p.failed, p.window, p.total);
                    let done = p.done;
                    outcome.last = Some(p);
                    if done {
                        break;
                    }
                } else if !line.trim().is_empty() {
                    tracing::debug!(pod = %pod_name, "{line}");
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(pod = %pod_name, error = %e, "the load Job's log stream broke off");
                break;
            }
        }
    }
    outcome.pod_phase = pods.get(&pod_name).await.ok().and_then(|p| p.status?.phase);
    // Not one progress line: sensor-sim never ran the load (no container on a kwok node, an
    // image that is not sensor-sim, a crash at start). Said as the load's error, so the report
    // names the cause instead of only failing the thresholds for want of acknowledgements.
    if outcome.last.is_none() && !*stop.borrow() {
        return Err(JobError::NoProgress(outcome.pod_phase));
    }
    Ok(outcome)
}

/// Deletes the Job and its pod (background propagation); a Job already gone is fine.
pub async fn delete(client: kube::Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let jobs: Api<Job> = Api::namespaced(client, namespace);
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> JobParams {
        JobParams {
            name: "lab-loadtest-x1y2z".into(),
            namespace: "iot".into(),
            instance: "lab".into(),
            image: "ghcr.io/iot-operator/sensor-sim:0.1.0".into(),
            server: "lab-coap-server:5683".into(),
            load: CoapLoad::Plaintext,
            profile: CoapProfile {
                rate: 1500.0,
                duration: Duration::from_secs(300),
                sockets: 4,
                window: 16,
                thresholds: Default::default(),
            },
            send_for: Duration::from_secs(120),
            scheduling: SchedulingSpec::default(),
        }
    }

    fn fleet(count: u32, new_port_per_reading: bool) -> JobParams {
        JobParams {
            server: "lab-coap-server:5684".into(),
            load: CoapLoad::Devices {
                devices: LoadDevices::new("lab", "lab-devices", count),
                new_port_per_reading,
            },
            ..params()
        }
    }

    fn container(job: &Job) -> &Container {
        &job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    #[test]
    fn over_dtls_the_job_runs_a_fleet_of_devices_at_the_profiles_rate() {
        let j = job(&fleet(32, true));
        let args = container(&j).args.as_ref().unwrap().join(" ");
        // 1500 readings/s over 32 devices: one each every 32 / 1500 s.
        assert_eq!(
            args,
            "load --json --duration 120.0 --devices 32 --interval 0.021333333333333333 \
             --new-port-per-reading --keys-dir /var/run/iot/devices --drain 10"
        );
        let kept = job(&fleet(4, false));
        let args = container(&kept).args.as_ref().unwrap();
        assert!(
            !args.contains(&"--new-port-per-reading".to_owned()),
            "{args:?}"
        );
    }

    #[test]
    fn over_dtls_the_pod_mounts_exactly_the_load_devices_keys_read_only() {
        let j = job(&fleet(3, true));
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volumes = pod.volumes.as_ref().unwrap();
        assert_eq!(volumes.len(), 1);
        let secret = volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("lab-devices"));
        assert_eq!(secret.optional, Some(false));
        assert_eq!(secret.default_mode, Some(0o440));
        let items: Vec<(&str, &str)> = secret
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert_eq!(
            items,
            [
                ("load-1", "load-1"),
                ("load-2", "load-2"),
                ("load-3", "load-3")
            ]
        );
        let mounts = container(&j).volume_mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(
            (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
            ("devices", "/var/run/iot/devices")
        );
        assert_eq!(mounts[0].read_only, Some(true));
        let env = container(&j).env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "COAP_SERVER"
                    && e.value.as_deref() == Some("lab-coap-server:5684"))
        );
    }

    #[test]
    fn in_plaintext_the_pod_mounts_no_keys() {
        let j = job(&params());
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.volumes.is_none() && container(&j).volume_mounts.is_none());
    }

    #[test]
    fn in_plaintext_the_job_runs_the_profiles_sockets_and_window() {
        let j = job(&params());
        let c = container(&j);
        assert_eq!(
            c.image.as_deref(),
            Some("ghcr.io/iot-operator/sensor-sim:0.1.0")
        );
        let args = c.args.as_ref().unwrap().join(" ");
        assert_eq!(
            args,
            "load --json --duration 120.0 --rate 1500 --sockets 4 --window 16 --drain 10 --place loadtest"
        );
        let env = c.env.as_ref().unwrap();
        assert!(
            env.iter()
                .any(|e| e.name == "COAP_SERVER"
                    && e.value.as_deref() == Some("lab-coap-server:5683"))
        );
        assert_eq!(j.metadata.namespace.as_deref(), Some("iot"));
    }

    #[test]
    fn the_job_is_bounded_and_cleans_up_after_itself() {
        let spec = job(&params()).spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(120 + 10 + 60));
        assert!(spec.ttl_seconds_after_finished.is_some());
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn the_job_pod_meets_the_restricted_pod_security_standard() {
        let j = job(&params());
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        let csc = container(&j).security_context.as_ref().unwrap();
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(
            csc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert!(container(&j).resources.as_ref().unwrap().requests.is_some());
    }

    #[test]
    fn the_job_pod_runs_where_the_simulator_would() {
        let pod = |p: &JobParams| job(p).spec.unwrap().template.spec.unwrap();
        let unset = pod(&params());
        assert!(unset.node_selector.is_none() && unset.tolerations.is_none());
        let mut p = params();
        p.scheduling.node_selector = BTreeMap::from([("type".into(), "real".into())]);
        p.scheduling.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("iot.operator.dev/real".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }];
        let set = pod(&p);
        assert_eq!(set.node_selector.unwrap()["type"], "real");
        assert_eq!(set.tolerations.unwrap().len(), 1);
    }

    #[test]
    fn the_job_is_labelled_for_the_monitor_but_not_as_an_operator_child() {
        let labels = job(&params()).metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "lab");
        assert_eq!(labels["app.kubernetes.io/name"], "loadtest");
        assert_ne!(labels["app.kubernetes.io/managed-by"], "iot-operator");
    }
}
