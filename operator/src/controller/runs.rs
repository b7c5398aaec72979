//! What the backup and restore Jobs' pods said: each finished run's pod is read once (a list
//! of one Job's pods) for its containers' termination messages, which iot-backup and the
//! restore script leave there. A run already in the status is not read again.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, Client};

use super::desired::labels::{Component, NAME};
use super::validate::ValidatedMonitor;
use crate::crd::IotMonitorStatus;

/// The label the Job controller puts on its pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// A finished run: how it ended, and what its pod said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) job: String,
    pub(crate) succeeded: bool,
    pub(crate) time: Time,
    /// The container that failed (or the last that ran, on success), its exit code and its
    /// termination message; `None` when no pod was left to read.
    pub(crate) said: Option<Said>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Said {
    pub(crate) container: String,
    pub(crate) exit_code: i32,
    pub(crate) message: String,
}

/// The runs the status is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Runs {
    /// The newest backup run that succeeded, and the newest that failed.
    pub(crate) backup_success: Option<Ended>,
    pub(crate) backup_failure: Option<Ended>,
    /// The restore Job: `None` while it has not finished (or does not exist yet).
    pub(crate) restore: Option<Ended>,
    /// The restore Job exists.
    pub(crate) restore_started: bool,
}

/// Whether `job` has finished, and how: its `Complete` or `Failed` condition.
pub(crate) fn finished(job: &Job) -> Option<(bool, Time)> {
    let status = job.status.as_ref()?;
    status.conditions.iter().flatten().find_map(|c| {
        let succeeded = match c.type_.as_str() {
            "Complete" => true,
            "Failed" => false,
            _ => return None,
        };
        (c.status == "True").then(|| {
            let time = c
                .last_transition_time
                .clone()
                .or_else(|| status.completion_time.clone())
                .unwrap_or(Time(jiff::Timestamp::UNIX_EPOCH));
            (succeeded, time)
        })
    })
}

fn is_component(job: &Job, component: Component) -> bool {
    job.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NAME))
        .is_some_and(|n| n == component.as_str())
}

/// The newest finished backup run that `succeeded` (or not), with its end time.
fn newest_backup(jobs: &[Job], succeeded: bool) -> Option<(&Job, Time)> {
    jobs.iter()
        .filter(|j| is_component(j, Component::Backup))
        .filter_map(|j| match finished(j) {
            Some((ok, time)) if ok == succeeded => Some((j, time)),
            _ => None,
        })
        .max_by(|a, b| a.1.0.cmp(&b.1.0))
}

fn job_name(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

/// What the failed container, or on success the last one, said, from a pod's status.
pub(crate) fn said(pod: &Pod, succeeded: bool) -> Option<Said> {
    let status = pod.status.as_ref()?;
    let all: Vec<&ContainerStatus> = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .collect();
    let ended = |c: &&ContainerStatus| {
        let terminated = c
            .state
            .as_ref()?
            .terminated
            .as_ref()
            .or_else(|| c.last_state.as_ref()?.terminated.as_ref())?;
        Some(Said {
            container: c.name.clone(),
            exit_code: terminated.exit_code,
            message: terminated
                .message
                .clone()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
    };
    if succeeded {
        all.iter().rev().find_map(ended)
    } else {
        all.iter().filter_map(ended).find(|s| s.exit_code != 0)
    }
}

/// Reads the pods of the runs that ended since the status last recorded one.
pub(crate) async fn read(
    client: &Client,
    model: &ValidatedMonitor,
    jobs: &[Job],
    previous: Option<&IotMonitorStatus>,
) -> Runs {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &model.namespace);
    let backup = previous.and_then(|s| s.backup.as_ref());
    let recorded_success = backup.and_then(|b| b.last_success.as_ref()).map(|s| &s.job);
    let recorded_failure = backup.and_then(|b| b.last_failure.as_ref()).map(|f| &f.job);
    let mut runs = Runs::default();
    if model.backup.is_some() {
        for succeeded in [true, false] {
            let Some((job, time)) = newest_backup(jobs, succeeded) else {
                continue;
            };
            let name = job_name(job);
            let recorded = if succeeded {
                recorded_success
            } else {
                recorded_failure
            };
            // Recorded already: kept from the status, not read again.
            let said = if recorded == Some(&name) {
                None
            } else {
                read_said(&pods, &name, succeeded).await
            };
            let ended = Ended {
                job: name,
                succeeded,
                time,
                said,
            };
            if succeeded {
                runs.backup_success = Some(ended);
            } else {
                runs.backup_failure = Some(ended);
            }
        }
    }
    if let Some(restore) = &model.restore
        && let Some(job) = jobs
            .iter()
            .find(|j| j.metadata.name.as_deref() == Some(restore.job.as_str()))
    {
        runs.restore_started = true;
        if let Some((succeeded, time)) = finished(job) {
            let recorded = previous
                .and_then(|s| s.restore.as_ref())
                .is_some_and(|r| r.job == restore.job && r.phase != "Running");
            let said = if recorded {
                None
            } else {
                read_said(&pods, &restore.job, succeeded).await
            };
            runs.restore = Some(Ended {
                job: restore.job.clone(),
                succeeded,
                time,
                said,
            });
        }
    }
    runs
}

/// The newest pod of `job`, and what it said. A failed read is logged and leaves the run
/// without words (the Job's own outcome still counts).
async fn read_said(pods: &Api<Pod>, job: &str, succeeded: bool) -> Option<Said> {
    let params = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}"));
    match pods.list(&params).await {
        Ok(list) => list
            .items
            .iter()
            .max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp)
            })
            .and_then(|pod| said(pod, succeeded)),
        Err(error) => {
            tracing::warn!(job, %error, "cannot read the pods of a backup or restore Job");
            None
        }
    }
}
