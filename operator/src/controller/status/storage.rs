//! `status.storage` and the `StorageExhaustedSoon` condition, from the last storage
//! measurement (`controller::storage`). The figures are rewritten only when the forecast
//! changes meaningfully, so a steady stack's status is not written every few minutes.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::put;
use crate::controller::storage::{Forecast, GrowOutcome, Measurement, SOON};
use crate::controller::validate::{InfluxMode, ValidatedMonitor};
use crate::crd::{IotMonitorStatus, StorageStatus};

pub(crate) const STORAGE_EXHAUSTED_SOON: &str = "StorageExhaustedSoon";

/// What to do, in every message of a true condition.
const WHAT_TO_DO: &str = "grow the volume (raise spec.influxdb.storage.size, or set spec.influxdb.storage.autoGrow where the StorageClass allows expansion), shorten spec.influxdb.retention, or add downsampling";

/// A used size that moved by this share of the capacity is worth a status write.
const USED_STEP: f64 = 0.05;
/// A fill date that moved by this share of the time left is worth one.
const FILL_STEP: f64 = 0.10;
/// ... and by at least this much.
const FILL_MIN_STEP: Duration = Duration::from_secs(3600);

/// Sets `status.storage` and the condition: removed with an external InfluxDB, kept as they
/// were without a new measurement, and from `measurement` when there is one.
pub(crate) fn set(
    status: &mut IotMonitorStatus,
    model: &ValidatedMonitor,
    previous: Option<&StorageStatus>,
    measurement: Option<&Measurement>,
    generation: Option<i64>,
    now: &Time,
) {
    if model.influx.mode == InfluxMode::External {
        status.storage = None;
        status
            .conditions
            .retain(|c| c.type_ != STORAGE_EXHAUSTED_SOON);
        return;
    }
    let Some(measurement) = measurement else {
        status.storage = previous.cloned();
        return;
    };
    let fresh = storage_status(measurement);
    let published = match previous {
        Some(p) if !meaningful_change(p, &fresh) => p.clone(),
        _ => fresh,
    };
    let soon = match published.forecast.as_str() {
        FULL => true,
        FILLS => published
            .fill_date
            .as_ref()
            .is_some_and(|d| seconds_between(&now.0, &d.0) <= SOON.as_secs_f64()),
        _ => false,
    };
    let (state, reason, message) = if soon {
        let (reason, what) = match &measurement.grow {
            Some(GrowOutcome::Grew { from, to }) => (
                "VolumeGrowing",
                format!("autoGrow asked for {to} (was {from})"),
            ),
            Some(GrowOutcome::Resizing) => (
                "VolumeResizing",
                "autoGrow is waiting for the storage backend to resize the volume".to_owned(),
            ),
            Some(GrowOutcome::Cannot { reason, message }) => (*reason, message.clone()),
            None if published.forecast == FULL => ("VolumeFull", WHAT_TO_DO.to_owned()),
            None => ("FillsWithin7Days", WHAT_TO_DO.to_owned()),
        };
        ("True", reason, format!("{}: {what}", published.message))
    } else {
        let reason = if published.forecast == FITS {
            "Fits"
        } else {
            "FillsLater"
        };
        ("False", reason, published.message.clone())
    };
    put(
        &mut status.conditions,
        STORAGE_EXHAUSTED_SOON,
        state,
        reason,
        message,
        generation,
        now,
    );
    status.storage = Some(published);
}

/// The condition when it has just turned true, or changed its reason while true: the Warning
/// Event to publish, once.
pub(crate) fn turned_true<'a>(
    before: Option<&Condition>,
    now: Option<&'a Condition>,
) -> Option<&'a Condition> {
    let now = now.filter(|c| c.status == "True")?;
    match before {
        Some(b) if b.status == "True" && b.reason == now.reason => None,
        _ => Some(now),
    }
}

const FITS: &str = "Fits";
const FILLS: &str = "Fills";
const FULL: &str = "Full";

fn storage_status(m: &Measurement) -> StorageStatus {
    let at = Time(m.at);
    let rate = format!(
        "{:.2} points/s at {:.1} bytes/point",
        m.points_per_second, m.bytes_per_point
    );
    let held = format!(
        "InfluxDB holds {} of {}",
        mebibytes(m.used_bytes as f64),
        m.capacity
    );
    let (forecast, fill_date, message) = match &m.forecast {
        Forecast::Fits { steady_bytes } => (
            FITS,
            None,
            format!(
                "{held}; at {rate} its data settles at {}, which fits: retention drops old data before the volume fills",
                mebibytes(*steady_bytes)
            ),
        ),
        Forecast::Fills { after } => {
            let date = m.at.checked_add(*after).ok().map(Time);
            let when = date
                .as_ref()
                .map_or_else(|| "beyond the calendar".to_owned(), |d| d.0.to_string());
            (
                FILLS,
                date,
                format!(
                    "{held}; at {rate} the volume fills in {} ({when})",
                    human(*after)
                ),
            )
        }
        Forecast::Full => (
            FULL,
            Some(at.clone()),
            format!("{held}: the volume is full"),
        ),
    };
    StorageStatus {
        capacity: m.capacity.clone(),
        capacity_bytes: i64::try_from(m.capacity_bytes).unwrap_or(i64::MAX),
        used_bytes: i64::try_from(m.used_bytes).unwrap_or(i64::MAX),
        points_per_second: round(m.points_per_second, 100.0),
        bytes_per_point: round(m.bytes_per_point, 10.0),
        fill_date,
        forecast: forecast.to_owned(),
        message,
        measured_at: at,
    }
}

/// Whether `fresh` says something `published` does not: another forecast or capacity, a used
/// size 5 % of the capacity away, or a fill date moved by a tenth of the time left (at least
/// an hour). Rates and bytes per point alone never cause a write.
fn meaningful_change(published: &StorageStatus, fresh: &StorageStatus) -> bool {
    if published.forecast != fresh.forecast || published.capacity_bytes != fresh.capacity_bytes {
        return true;
    }
    let capacity = fresh.capacity_bytes.max(1) as f64;
    if (published.used_bytes - fresh.used_bytes).abs() as f64 > USED_STEP * capacity {
        return true;
    }
    match (&published.fill_date, &fresh.fill_date) {
        (Some(old), Some(new)) => {
            let left = seconds_between(&fresh.measured_at.0, &new.0).max(0.0);
            let moved = seconds_between(&old.0, &new.0).abs();
            moved > (FILL_STEP * left).max(FILL_MIN_STEP.as_secs_f64())
        }
        (None, None) => false,
        _ => true,
    }
}

fn seconds_between(from: &jiff::Timestamp, to: &jiff::Timestamp) -> f64 {
    to.duration_since(*from).as_secs_f64()
}

fn round(x: f64, per: f64) -> f64 {
    (x * per).round() / per
}

fn mebibytes(bytes: f64) -> String {
    format!("{:.1}Mi", bytes / 1_048_576.0)
}

/// `3d 4h`, `5h 12m`, `42m`: enough to read at a glance.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::model as validated;

    const MI: u64 = 1 << 20;

    fn at(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    fn measurement(used_mi: u64, forecast: Forecast, t: i64) -> Measurement {
        Measurement {
            capacity: "64Mi".into(),
            capacity_bytes: 64 * MI,
            used_bytes: used_mi * MI,
            points_per_second: 100.0,
            bytes_per_point: 7.0,
            forecast,
            at: at(t),
            grow: None,
        }
    }

    fn fills_in_days(days: f64) -> Forecast {
        Forecast::Fills {
            after: Duration::from_secs_f64(days * 86_400.0),
        }
    }

    fn run(previous: &IotMonitorStatus, m: Option<&Measurement>, now: i64) -> IotMonitorStatus {
        let mut status = previous.clone();
        let model = validated("{}");
        set(
            &mut status,
            &model,
            previous.storage.as_ref(),
            m,
            Some(1),
            &Time(at(now)),
        );
        status
    }

    fn condition(status: &IotMonitorStatus) -> &Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == STORAGE_EXHAUSTED_SOON)
            .expect("the condition")
    }

    #[test]
    fn a_fill_date_within_seven_days_turns_the_condition_true_with_what_to_do() {
        let status = run(
            &IotMonitorStatus::default(),
            Some(&measurement(40, fills_in_days(2.0), 1000)),
            1000,
        );
        let storage = status.storage.as_ref().unwrap();
        assert_eq!(storage.forecast, "Fills");
        assert_eq!(storage.fill_date, Some(Time(at(1000 + 2 * 86_400))));
        let c = condition(&status);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "FillsWithin7Days")
        );
        assert!(
            c.message.contains("shorten spec.influxdb.retention"),
            "{}",
            c.message
        );
        assert!(c.message.contains("fills in 2d 0h"), "{}", c.message);
    }

    #[test]
    fn a_volume_that_fits_or_fills_later_is_false() {
        let fits = run(
            &IotMonitorStatus::default(),
            Some(&measurement(
                10,
                Forecast::Fits {
                    steady_bytes: 20.0 * MI as f64,
                },
                0,
            )),
            0,
        );
        assert_eq!(condition(&fits).status, "False");
        assert_eq!(condition(&fits).reason, "Fits");
        assert_eq!(fits.storage.unwrap().fill_date, None);
        let later = run(
            &IotMonitorStatus::default(),
            Some(&measurement(10, fills_in_days(30.0), 0)),
            0,
        );
        assert_eq!(condition(&later).reason, "FillsLater");
    }

    #[test]
    fn small_changes_write_nothing_and_large_ones_do() {
        let first = run(
            &IotMonitorStatus::default(),
            Some(&measurement(10, fills_in_days(30.0), 0)),
            0,
        );
        // Five minutes on: 0.1 MiB more, the date a few minutes off: the same status.
        let same = run(
            &first,
            Some(&measurement(10, fills_in_days(30.0 - 0.001), 300)),
            300,
        );
        assert_eq!(same, first);
        // Half the time left: a new date, and the condition (still false) says so.
        let moved = run(
            &first,
            Some(&measurement(12, fills_in_days(15.0), 600)),
            600,
        );
        assert_ne!(moved.storage, first.storage);
        // 5 % of the capacity more used is news too.
        let fuller = run(
            &first,
            Some(&measurement(14, fills_in_days(30.0), 600)),
            600,
        );
        assert_ne!(fuller.storage, first.storage);
    }

    #[test]
    fn without_a_measurement_the_last_figures_stay() {
        let first = run(
            &IotMonitorStatus::default(),
            Some(&measurement(40, fills_in_days(2.0), 0)),
            0,
        );
        assert_eq!(run(&first, None, 900), first);
    }

    #[test]
    fn autogrow_outcomes_are_the_reason() {
        let mut m = measurement(60, fills_in_days(0.5), 0);
        m.grow = Some(GrowOutcome::Cannot {
            reason: "ExpansionNotAllowed",
            message: "StorageClass x does not allow volume expansion".into(),
        });
        let status = run(&IotMonitorStatus::default(), Some(&m), 0);
        let c = condition(&status);
        assert_eq!(c.reason, "ExpansionNotAllowed");
        assert!(c.message.contains("StorageClass x"), "{}", c.message);
        m.grow = Some(GrowOutcome::Grew {
            from: "64Mi".into(),
            to: "96Mi".into(),
        });
        let grown = run(&status, Some(&m), 0);
        assert_eq!(condition(&grown).reason, "VolumeGrowing");
        // A new reason while true is a new Event; the same reason again is not.
        assert!(turned_true(Some(condition(&status)), Some(condition(&grown))).is_some());
        assert!(turned_true(Some(condition(&grown)), Some(condition(&grown))).is_none());
    }

    #[test]
    fn an_external_influxdb_has_no_storage_status() {
        let mut status = run(
            &IotMonitorStatus::default(),
            Some(&measurement(40, fills_in_days(2.0), 0)),
            0,
        );
        let model = validated(
            "{influxdb: {external: {url: 'http://influx:8086', credentialsSecret: creds}}}",
        );
        let previous = status.storage.clone();
        set(
            &mut status,
            &model,
            previous.as_ref(),
            None,
            Some(1),
            &Time(at(0)),
        );
        assert_eq!(status.storage, None);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.type_ != STORAGE_EXHAUSTED_SOON)
        );
    }
}
