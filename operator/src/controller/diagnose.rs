//! Why InfluxDB does not start, in words a person can act on. Its pod is read (one GET, no
//! watch of every pod in the cluster) only while the StatefulSet has been short of ready
//! replicas for longer than a normal start takes; the verdict is a pure function of the pod.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};

use super::validate::{InfluxMode, ValidatedMonitor};

/// The InfluxDB container's name in its pod (`desired::influxdb`).
pub(crate) const INFLUXDB_CONTAINER: &str = "influxdb";

/// A young StatefulSet is still starting: its pod is not read before this age.
const STARTUP_GRACE_SECONDS: i64 = 20;

/// Longest message kept: the status is for reading in a terminal, not for logs.
const MAX_MESSAGE_CHARS: usize = 300;

/// A container that does not run, as its pod reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerTrouble {
    /// The kubelet's reason: `CrashLoopBackOff`, `Error`, `ErrImageNeverPull`, ...
    pub reason: String,
    pub restarts: i32,
    /// The last line the container left (its termination message, or the kubelet's message
    /// while it waits), shortened.
    pub message: String,
}

impl ContainerTrouble {
    /// What to do about it, where the message says enough to tell.
    pub fn hint(&self) -> Option<&'static str> {
        if self.message.contains("permission denied") {
            Some(
                "the data volume is not writable by InfluxDB's non-root user: give \
                 spec.influxdb.storage.storageClassName a StorageClass whose volumes non-root \
                 pods can write (fsGroup is not applied to hostPath volumes)",
            )
        } else if self.reason.contains("Image") {
            Some("the node cannot get spec.influxdb.image")
        } else {
            None
        }
    }

    /// One line for a status message: reason, restarts, message, hint.
    pub fn describe(&self) -> String {
        let mut text = self.reason.clone();
        if self.restarts > 0 {
            text.push_str(&format!(" after {} restart(s)", self.restarts));
        }
        if !self.message.is_empty() {
            text.push_str(": ");
            text.push_str(&self.message);
        }
        if let Some(hint) = self.hint() {
            text.push_str(" (");
            text.push_str(hint);
            text.push(')');
        }
        text
    }
}

/// Why `container` of `pod` does not run, or `None` when it runs (or nothing is known yet).
pub fn container_trouble(pod: &Pod, container: &str) -> Option<ContainerTrouble> {
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?;
    let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref());
    let terminated = status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| status.last_state.as_ref()?.terminated.as_ref());
    if status.ready && waiting.is_none() {
        return None;
    }
    // A container that runs but is not ready yet is starting, not in trouble.
    if waiting.is_none() && status.state.as_ref().is_some_and(|s| s.running.is_some()) {
        return None;
    }
    let reason = waiting
        .and_then(|w| w.reason.clone())
        .or_else(|| terminated.and_then(|t| t.reason.clone()))?;
    let message = terminated
        .and_then(|t| t.message.as_deref())
        .and_then(last_line)
        .or_else(|| terminated.map(|t| format!("exit code {}", t.exit_code)))
        .or_else(|| {
            waiting
                .and_then(|w| w.message.as_deref())
                .and_then(last_line)
        })
        .unwrap_or_default();
    Some(ContainerTrouble {
        reason,
        restarts: status.restart_count,
        message,
    })
}

/// The last non-empty line, shortened: a log tail (`FallbackToLogsOnError`) ends with the error.
fn last_line(text: &str) -> Option<String> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let mut short: String = line.chars().take(MAX_MESSAGE_CHARS).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    Some(short)
}

/// Whether a StatefulSet is short of ready replicas past its start-up grace.
fn stalled(set: &StatefulSet, now: &Time) -> bool {
    let desired = set.spec.replicas.unwrap_or(1);
    let ready = set
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let Some(created) = set.metadata.creation_timestamp.as_ref() else {
        return false;
    };
    ready < desired && now.0.as_second() - created.0.as_second() >= STARTUP_GRACE_SECONDS
}

/// Why the monitor's InfluxDB pod does not start, if its StatefulSet has stalled. Best effort:
/// a failed read (no RBAC for pods, the pod not created) says nothing.
pub async fn influxdb_trouble(
    client: &Client,
    model: &ValidatedMonitor,
    stateful_sets: &[StatefulSet],
    now: &Time,
) -> Option<ContainerTrouble> {
    if !matches!(model.influx.mode, InfluxMode::Internal(_)) {
        return None;
    }
    let name = &model.names.influxdb;
    let set = stateful_sets
        .iter()
        .find(|s| s.metadata.name.as_ref() == Some(name))?;
    if !stalled(set, now) {
        return None;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &model.namespace);
    match pods.get_opt(&format!("{name}-0")).await {
        Ok(pod) => container_trouble(&pod?, INFLUXDB_CONTAINER),
        Err(error) => {
            tracing::debug!(%error, pod = %format!("{name}-0"), "cannot read the InfluxDB pod");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodStatus,
    };

    use super::*;

    const DENIED: &str = "ts=2026-12-06T08:00:00Z lvl=info msg=\"InfluxDB starting\"\n\
                          run: create server: mkdir all: mkdir /var/lib/influxdb/meta: permission denied\n";

    fn pod(status: ContainerStatus) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![status]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn crash_looping(message: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            name: INFLUXDB_CONTAINER.into(),
            restart_count: 3,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: Some("back-off 40s restarting failed container".into()),
                }),
                ..ContainerState::default()
            }),
            last_state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    reason: Some("Error".into()),
                    message: message.map(str::to_owned),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn a_crash_loop_reports_the_last_line_the_container_left_and_a_hint() {
        let trouble = container_trouble(&pod(crash_looping(Some(DENIED))), INFLUXDB_CONTAINER)
            .expect("trouble");
        assert_eq!(trouble.reason, "CrashLoopBackOff");
        assert_eq!(trouble.restarts, 3);
        assert_eq!(
            trouble.message,
            "run: create server: mkdir all: mkdir /var/lib/influxdb/meta: permission denied"
        );
        let text = trouble.describe();
        assert!(text.starts_with("CrashLoopBackOff after 3 restart(s): run: create server"));
        assert!(text.contains("storageClassName"), "{text}");
    }

    #[test]
    fn without_a_termination_message_the_exit_code_is_reported() {
        let trouble =
            container_trouble(&pod(crash_looping(None)), INFLUXDB_CONTAINER).expect("trouble");
        assert_eq!(trouble.message, "exit code 1");
        assert_eq!(trouble.hint(), None);
    }

    #[test]
    fn a_missing_image_is_reported_with_the_kubelets_message() {
        let status = ContainerStatus {
            name: INFLUXDB_CONTAINER.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ErrImageNeverPull".into()),
                    message: Some("Container image \"influxdb:9\" is not present".into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let trouble = container_trouble(&pod(status), INFLUXDB_CONTAINER).expect("trouble");
        assert_eq!(
            trouble.message,
            "Container image \"influxdb:9\" is not present"
        );
        assert!(trouble.describe().contains("spec.influxdb.image"));
    }

    #[test]
    fn a_running_container_is_not_in_trouble_even_before_it_is_ready() {
        let status = ContainerStatus {
            name: INFLUXDB_CONTAINER.into(),
            restart_count: 1,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            ..crash_looping(Some(DENIED))
        };
        assert_eq!(container_trouble(&pod(status), INFLUXDB_CONTAINER), None);
        assert_eq!(container_trouble(&Pod::default(), INFLUXDB_CONTAINER), None);
    }

    #[test]
    fn long_messages_are_shortened() {
        let long = "x".repeat(1000);
        let trouble = container_trouble(&pod(crash_looping(Some(&long))), INFLUXDB_CONTAINER)
            .expect("trouble");
        assert_eq!(trouble.message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn only_a_stateful_set_past_its_start_up_grace_is_looked_into() {
        let set = |age: i64, ready: i32| StatefulSet {
            metadata: kube::api::ObjectMeta {
                creation_timestamp: Some(Time(
                    jiff::Timestamp::from_second(1000 - age).expect("time"),
                )),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..StatefulSet::default()
        };
        let now = Time(jiff::Timestamp::from_second(1000).expect("time"));
        assert!(!stalled(&set(5, 0), &now));
        assert!(stalled(&set(60, 0), &now));
        assert!(!stalled(&set(60, 1), &now));
    }
}
