//! `status.backup`, `status.restore` and the conditions `BackupFailing` and `RestoreFailing`,
//! from the runs' outcomes (`runs`) and the previous status: pure.

use iot_common::backup_result::BackupResult;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::controller::runs::{Ended, Runs, Said};
use crate::controller::validate::ValidatedMonitor;
use crate::crd::{BackupFailure, BackupStatus, BackupSuccess, IotMonitorStatus, RestoreStatus};

pub(crate) const BACKUP_FAILING: &str = "BackupFailing";
pub(crate) const RESTORE_FAILING: &str = "RestoreFailing";

/// The restore script's exit code when the volume already holds the databases.
const REFUSED_EXIT_CODE: i32 = 3;

/// A condition to set: status (`True`, `False`, `Unknown`), reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) status: &'static str,
    pub(crate) reason: String,
    pub(crate) message: String,
}

fn rfc3339(time: &Time) -> String {
    time.0.to_string()
}

/// What went wrong, in the words the run left: iot-backup's result with its fix, else the
/// container's last line (influxd's log tail, the restore script's message).
pub(crate) fn failure_text(said: Option<&Said>) -> String {
    let Some(said) = said else {
        return "the run failed and left no pod to read (see the Job's events)".to_owned();
    };
    if let Some(BackupResult::Failed { error, fix }) = BackupResult::parse(&said.message) {
        return match fix {
            Some(fix) => format!("{error}; {fix}"),
            None => error,
        };
    }
    let last = said
        .message
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let last = last
        .char_indices()
        .nth(600)
        .map_or(last, |(at, _)| &last[..at]);
    let what = match said.container.as_str() {
        "influxd-backup" => "influxd backup",
        "restore" => "the restore",
        other => other,
    };
    if last.is_empty() {
        format!("{what} exited with {}", said.exit_code)
    } else {
        format!("{what} exited with {}: {last}", said.exit_code)
    }
}

/// `status.backup` from the newest runs and the previous status; `None` without backups.
pub(crate) fn backup_status(
    model: &ValidatedMonitor,
    runs: &Runs,
    previous: Option<&BackupStatus>,
) -> Option<BackupStatus> {
    model.backup.as_ref()?;
    let mut status = previous.cloned().unwrap_or_default();
    if let Some(run) = &runs.backup_success
        && status
            .last_success
            .as_ref()
            .is_none_or(|s| s.job != run.job)
    {
        let stored = run
            .said
            .as_ref()
            .and_then(|s| BackupResult::parse(&s.message));
        let (name, size, time, kept) = match stored {
            Some(BackupResult::Stored {
                name,
                size,
                time,
                kept,
                ..
            }) => (name, size, time, kept),
            _ => (String::new(), 0, rfc3339(&run.time), Vec::new()),
        };
        status.last_success = Some(BackupSuccess {
            time,
            name,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            job: run.job.clone(),
        });
        status.available = kept;
    }
    if let Some(run) = &runs.backup_failure
        && status
            .last_failure
            .as_ref()
            .is_none_or(|f| f.job != run.job)
    {
        status.last_failure = Some(BackupFailure {
            time: rfc3339(&run.time),
            message: failure_text(run.said.as_ref()),
            job: run.job.clone(),
        });
    }
    Some(status)
}

fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// `BackupFailing`: true while backups cannot run or the last run failed; `None` without
/// backups.
pub(crate) fn backup_condition(
    model: &ValidatedMonitor,
    status: Option<&BackupStatus>,
) -> Option<Verdict> {
    let backup = model.backup.as_ref()?;
    if let Err(blocked) = &backup.target {
        return Some(Verdict {
            status: "True",
            reason: blocked.reason.to_owned(),
            message: blocked.message.clone(),
        });
    }
    let success = status.and_then(|s| s.last_success.as_ref());
    let failure = status.and_then(|s| s.last_failure.as_ref());
    let failed_last = match (success, failure) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(s), Some(f)) => parse_time(&f.time) > parse_time(&s.time),
    };
    Some(match (success, failure) {
        (_, Some(f)) if failed_last => Verdict {
            status: "True",
            reason: "BackupFailed".to_owned(),
            message: format!("the backup of {} failed: {}", f.time, f.message),
        },
        (Some(s), _) => Verdict {
            status: "False",
            reason: "BackupSucceeded".to_owned(),
            message: format!("last backup {} ({} bytes) at {}", s.name, s.size, s.time),
        },
        _ => Verdict {
            status: "Unknown",
            reason: "NoBackupYet".to_owned(),
            message: format!(
                "no backup has run yet; the schedule is '{}'",
                backup.schedule
            ),
        },
    })
}

/// `status.restore`; `None` without `restoreFrom`.
pub(crate) fn restore_status(
    model: &ValidatedMonitor,
    runs: &Runs,
    previous: Option<&RestoreStatus>,
) -> Option<RestoreStatus> {
    let restore = model.restore.as_ref()?;
    let base = RestoreStatus {
        requested: restore.requested.clone(),
        phase: "Running".to_owned(),
        backup: None,
        message: String::new(),
        job: restore.job.clone(),
    };
    if let Err(blocked) = &restore.target {
        return Some(RestoreStatus {
            phase: "Blocked".to_owned(),
            message: blocked.message.clone(),
            ..base
        });
    }
    let Some(run) = &runs.restore else {
        return Some(RestoreStatus {
            message: format!(
                "restoring {}: InfluxDB makes no database until it is done, so the workloads are answered 5.03 (senders retry)",
                restore.requested
            ),
            ..base
        });
    };
    // Recorded already: its words are in the previous status.
    if run.said.is_none()
        && let Some(previous) = previous
        && previous.job == restore.job
        && previous.phase != "Running"
    {
        return Some(previous.clone());
    }
    Some(ended_restore(base, run))
}

fn ended_restore(base: RestoreStatus, run: &Ended) -> RestoreStatus {
    let fetched = run.said.as_ref().and_then(|s| {
        s.message
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
    });
    if run.succeeded {
        let name = fetched
            .as_ref()
            .and_then(|v| v["name"].as_str())
            .map(str::to_owned);
        let points = fetched.as_ref().and_then(|v| v["points"].as_i64());
        let message = match (&name, points) {
            (Some(name), Some(points)) => format!("restored {name}: {points} points"),
            (Some(name), None) => format!("restored {name}"),
            _ => "restored".to_owned(),
        };
        return RestoreStatus {
            phase: "Restored".to_owned(),
            backup: name,
            message,
            ..base
        };
    }
    let refused = run
        .said
        .as_ref()
        .is_some_and(|s| s.container == "restore" && s.exit_code == REFUSED_EXIT_CODE);
    RestoreStatus {
        phase: if refused { "Refused" } else { "Failed" }.to_owned(),
        message: failure_text(run.said.as_ref()),
        ..base
    }
}

/// `RestoreFailing`: true when the restore was refused, failed or cannot run; `None` without
/// `restoreFrom`.
pub(crate) fn restore_condition(status: Option<&RestoreStatus>) -> Option<Verdict> {
    let status = status?;
    let (truth, reason) = match status.phase.as_str() {
        "Restored" => ("False", "Restored"),
        "Running" => ("False", "Restoring"),
        "Refused" => ("True", "VolumeHasData"),
        "Blocked" => ("True", "CredentialsNotUsable"),
        _ => ("True", "RestoreFailed"),
    };
    Some(Verdict {
        status: truth,
        reason: reason.to_owned(),
        message: status.message.clone(),
    })
}

/// The Warning Events a new status calls for, once each: a backup run that failed (each
/// failed Job once), backups that cannot run, and a restore that failed or was refused.
pub(crate) fn warnings(
    previous: Option<&IotMonitorStatus>,
    now: &IotMonitorStatus,
) -> Vec<(String, String)> {
    let condition = |status: Option<&IotMonitorStatus>, type_: &str| -> Option<Condition> {
        status?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .cloned()
    };
    let mut events = Vec::new();
    for type_ in [BACKUP_FAILING, RESTORE_FAILING] {
        let (Some(new), old) = (condition(Some(now), type_), condition(previous, type_)) else {
            continue;
        };
        if new.status != "True" {
            continue;
        }
        let failed_job = |s: Option<&IotMonitorStatus>| {
            s.and_then(|s| s.backup.as_ref())
                .and_then(|b| b.last_failure.as_ref())
                .map(|f| f.job.clone())
        };
        let again = type_ == BACKUP_FAILING && failed_job(previous) != failed_job(Some(now));
        let turned = old
            .as_ref()
            .is_none_or(|o| o.status != "True" || o.reason != new.reason);
        if turned || again {
            events.push((new.reason.clone(), new.message.clone()));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::model;

    const BACKUP: &str = "{influxdb: {backup: {schedule: '0 3 * * *'}}}";

    fn at(s: &str) -> Time {
        Time(s.parse().expect("time"))
    }

    fn run(
        job: &str,
        succeeded: bool,
        time: &str,
        container: &str,
        code: i32,
        message: &str,
    ) -> Ended {
        Ended {
            job: job.into(),
            succeeded,
            time: at(time),
            said: Some(Said {
                container: container.into(),
                exit_code: code,
                message: message.into(),
            }),
        }
    }

    /// The run `lab-backup-1` that stored backup `name`.
    fn stored_run(name: &str) -> Ended {
        run(
            "lab-backup-1",
            true,
            "2027-01-01T03:00:05Z",
            "store",
            0,
            &stored(name),
        )
    }

    fn stored(name: &str) -> String {
        BackupResult::Stored {
            name: name.into(),
            size: 4096,
            time: "2027-01-01T03:00:01Z".into(),
            deleted: vec![],
            kept: vec![name.into()],
        }
        .to_line()
    }

    #[test]
    fn a_stored_backup_fills_last_success_and_clears_backup_failing() {
        let m = model(BACKUP);
        let runs = Runs {
            backup_success: Some(stored_run("lab-20270101T030001Z.tar.gz")),
            ..Runs::default()
        };
        let status = backup_status(&m, &runs, None).expect("status");
        let success = status.last_success.clone().expect("success");
        assert_eq!(success.name, "lab-20270101T030001Z.tar.gz");
        assert_eq!(success.size, 4096);
        assert_eq!(success.time, "2027-01-01T03:00:01Z");
        assert_eq!(status.available, ["lab-20270101T030001Z.tar.gz"]);
        let verdict = backup_condition(&m, Some(&status)).expect("condition");
        assert_eq!(
            (verdict.status, verdict.reason.as_str()),
            ("False", "BackupSucceeded")
        );
    }

    #[test]
    fn a_failed_run_after_the_last_success_sets_backup_failing_with_what_to_fix() {
        let m = model(BACKUP);
        let failed = BackupResult::Failed {
            error: "cannot store the backup: NoSuchBucket".into(),
            fix: Some("bucket nope does not exist at http://s3:8333: create it".into()),
        }
        .to_line();
        let runs = Runs {
            backup_success: Some(stored_run("a")),
            backup_failure: Some(run(
                "lab-backup-2",
                false,
                "2027-01-02T03:00:05Z",
                "store",
                1,
                &failed,
            )),
            ..Runs::default()
        };
        let status = backup_status(&m, &runs, None).expect("status");
        let verdict = backup_condition(&m, Some(&status)).expect("condition");
        assert_eq!(
            (verdict.status, verdict.reason.as_str()),
            ("True", "BackupFailed")
        );
        assert!(
            verdict
                .message
                .contains("NoSuchBucket; bucket nope does not exist"),
            "{}",
            verdict.message
        );
        // influxd's own words when the first step fails.
        let runs = Runs {
            backup_failure: Some(run(
                "lab-backup-3",
                false,
                "2027-01-03T03:00:05Z",
                "influxd-backup",
                1,
                "2027/01/03 backup: dial tcp 198.18.0.4:8088: connect: connection refused\n",
            )),
            ..Runs::default()
        };
        let status = backup_status(&m, &runs, Some(&status)).expect("status");
        let failure = status.last_failure.expect("failure");
        assert_eq!(failure.job, "lab-backup-3");
        assert!(
            failure
                .message
                .starts_with("influxd backup exited with 1: "),
            "{}",
            failure.message
        );
        assert_eq!(status.last_success.expect("kept").job, "lab-backup-1");
    }

    #[test]
    fn a_run_already_recorded_keeps_its_words() {
        let m = model(BACKUP);
        let first = Runs {
            backup_success: Some(stored_run("a")),
            ..Runs::default()
        };
        let status = backup_status(&m, &first, None);
        let again = Runs {
            backup_success: Some(Ended {
                said: None,
                ..first.backup_success.clone().expect("run")
            }),
            ..Runs::default()
        };
        assert_eq!(backup_status(&m, &again, status.as_ref()), status);
    }

    #[test]
    fn no_run_yet_is_unknown_and_no_backup_spec_is_no_condition() {
        let m = model(BACKUP);
        let verdict = backup_condition(&m, None).expect("condition");
        assert_eq!(
            (verdict.status, verdict.reason.as_str()),
            ("Unknown", "NoBackupYet")
        );
        assert_eq!(backup_condition(&model("{}"), None), None);
        assert_eq!(backup_status(&model("{}"), &Runs::default(), None), None);
    }

    #[test]
    fn a_refused_restore_says_so_and_a_finished_one_how_many_points() {
        let m = model("{influxdb: {restoreFrom: {backup: latest}}}");
        let running = restore_status(&m, &Runs::default(), None).expect("status");
        assert_eq!(running.phase, "Running");
        assert!(running.message.contains("5.03"));
        let refused = Runs {
            restore: Some(run(
                "x",
                false,
                "2027-01-01T00:00:00Z",
                "restore",
                3,
                "refused: the volume already holds database dht, so nothing was restored",
            )),
            ..Runs::default()
        };
        let status = restore_status(&m, &refused, None).expect("status");
        assert_eq!(status.phase, "Refused");
        let verdict = restore_condition(Some(&status)).expect("condition");
        assert_eq!(
            (verdict.status, verdict.reason.as_str()),
            ("True", "VolumeHasData")
        );
        assert!(verdict.message.contains("already holds database dht"));
        let done = Runs {
            restore: Some(run(
                "x",
                true,
                "2027-01-01T00:00:00Z",
                "restore",
                0,
                r#"{"result":"restored","name":"lab-20270101T000000Z.tar.gz","points":1200}"#,
            )),
            ..Runs::default()
        };
        let status = restore_status(&m, &done, None).expect("status");
        assert_eq!(status.phase, "Restored");
        assert_eq!(
            status.backup.as_deref(),
            Some("lab-20270101T000000Z.tar.gz")
        );
        assert_eq!(
            status.message,
            "restored lab-20270101T000000Z.tar.gz: 1200 points"
        );
    }

    #[test]
    fn each_failed_run_is_one_warning() {
        let m = model(BACKUP);
        let failing = |job: &str| {
            let runs = Runs {
                backup_failure: Some(run(job, false, "2027-01-02T03:00:05Z", "store", 1, "boom")),
                ..Runs::default()
            };
            let backup = backup_status(&m, &runs, None);
            let verdict = backup_condition(&m, backup.as_ref()).expect("condition");
            IotMonitorStatus {
                backup,
                conditions: vec![Condition {
                    type_: BACKUP_FAILING.into(),
                    status: verdict.status.into(),
                    reason: verdict.reason,
                    message: verdict.message,
                    observed_generation: None,
                    last_transition_time: at("2027-01-02T03:00:05Z"),
                }],
                ..IotMonitorStatus::default()
            }
        };
        let first = failing("lab-backup-1");
        assert_eq!(warnings(None, &first).len(), 1);
        assert!(
            warnings(Some(&first), &first).is_empty(),
            "the same run: no second Event"
        );
        assert_eq!(warnings(Some(&first), &failing("lab-backup-2")).len(), 1);
    }
}
