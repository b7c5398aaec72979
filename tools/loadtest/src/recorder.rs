//! The recorder: once a second, the cluster sample and the load sample become timeline rows,
//! appended to `timeline.csv` and flushed (a run cut short keeps every second it had). It ends
//! at its deadline, on Ctrl-C, or `settle` after the load reports done (sooner, when asked,
//! once the autoscaler is back at its minimum after the load).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::Write as _;
use tokio::sync::watch;

use super::meter::LoadMeter;
use super::sampler::Sampler;
use super::timeline::{HEADER, HpaReplicas, Row, Sample};

/// Seconds the autoscaler must stay back at its minimum before an early end, so the plot shows
/// the last step settled.
pub const SCALED_IN_SECONDS: u32 = 10;

/// When the recorder stops.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Never record past this.
    pub deadline: Instant,
    /// Keep recording this long after the load has finished (to see the scale-in).
    pub settle: Duration,
    /// End the settle early once this autoscaler is back at its minimum.
    pub scaled_in: Option<ScaledIn>,
}

/// Which HPA must be back at which replica count for an early end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaledIn {
    /// Grafana's HPA; coap-server's when false.
    pub grafana: bool,
    /// Its `minReplicas`.
    pub min_replicas: i32,
}

impl ScaledIn {
    /// Desired and current replicas are both at the minimum.
    pub fn reached(&self, sample: &Sample) -> bool {
        let hpa: HpaReplicas = if self.grafana {
            sample.grafana
        } else {
            sample.coap_server
        };
        hpa.desired == Some(self.min_replicas) && hpa.current == Some(self.min_replicas)
    }
}

/// Whether a recording ends after this second: the settle is over, or the load is done and the
/// autoscaler has been back at its minimum for `SCALED_IN_SECONDS` seconds (`at_min`, counted
/// by the caller, includes this second).
pub fn settled(
    now: Instant,
    load_done: Option<Instant>,
    settle: Duration,
    at_min: u32,
) -> Option<Ended> {
    let done = load_done?;
    if now >= done + settle {
        Some(Ended::LoadDone)
    } else if at_min >= SCALED_IN_SECONDS {
        Some(Ended::ScaledIn)
    } else {
        None
    }
}

/// Why the recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The load was done and the settle time over.
    LoadDone,
    /// The load was done and the autoscaler back at its minimum (`--until-scaled-in`).
    ScaledIn,
    /// The run's bound in time was reached first.
    Deadline,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// Records until the bounds say stop. `load_done` turns `Some(when)` once the load is over;
/// `stop` is Ctrl-C. `each_second` sees every sample (the progress line).
pub async fn record(
    sampler: &Sampler,
    meter: Arc<LoadMeter>,
    csv: &Path,
    bounds: Bounds,
    load_done: watch::Receiver<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
    mut each_second: impl FnMut(&Sample),
) -> std::io::Result<(Vec<Row>, Ended)> {
    // Plain blocking writes: one short line per pod a second, flushed, is cheaper than a
    // thread hop, and the file is complete up to the last second at any time.
    let mut file = std::fs::File::create(csv)?;
    file.write_all(format!("{HEADER}\n").as_bytes())?;
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut at_min = 0u32;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A late tick (a loaded machine) is taken at once and the next ones stay on the grid.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ended = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break Ended::Interrupted,
        }
        let now = Instant::now();
        let cluster = sampler.sample();
        let sample = Sample {
            time: timestamp(),
            elapsed_s: (now - started).as_secs_f64(),
            grafana: cluster.grafana,
            coap_server: cluster.coap_server,
            pods: cluster.pods,
            load: meter.sample(),
        };
        let new_rows = sample.rows();
        let text: String = new_rows.iter().map(Row::to_csv).collect();
        file.write_all(text.as_bytes())?;
        file.flush()?;
        rows.extend(new_rows);
        each_second(&sample);
        if now >= bounds.deadline {
            break Ended::Deadline;
        }
        let done = *load_done.borrow();
        at_min = match bounds.scaled_in {
            Some(target) if done.is_some_and(|d| now >= d) && target.reached(&sample) => at_min + 1,
            _ => 0,
        };
        if let Some(ended) = settled(now, done, bounds.settle, at_min) {
            break ended;
        }
    };
    file.sync_all()?;
    Ok((rows, ended))
}

/// Now, RFC 3339 in UTC with milliseconds.
fn timestamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(desired: i32, current: i32) -> Sample {
        Sample {
            coap_server: HpaReplicas {
                desired: Some(desired),
                current: Some(current),
            },
            ..Sample::default()
        }
    }

    #[test]
    fn back_at_the_minimum_needs_desired_and_current() {
        let target = ScaledIn {
            grafana: false,
            min_replicas: 1,
        };
        assert!(target.reached(&sample(1, 1)));
        assert!(!target.reached(&sample(1, 2)));
        assert!(!target.reached(&sample(2, 1)));
        assert!(!target.reached(&Sample::default()));
        let grafana = ScaledIn {
            grafana: true,
            ..target
        };
        assert!(!grafana.reached(&sample(1, 1)), "the other HPA");
    }

    #[test]
    fn the_recording_ends_after_the_settle_or_once_scaled_in() {
        let t0 = Instant::now();
        let settle = Duration::from_secs(300);
        let later = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            settled(later(500), None, settle, 99),
            None,
            "load still running"
        );
        assert_eq!(settled(later(100), Some(t0), settle, 0), None);
        assert_eq!(
            settled(later(100), Some(t0), settle, SCALED_IN_SECONDS - 1),
            None
        );
        assert_eq!(
            settled(later(100), Some(t0), settle, SCALED_IN_SECONDS),
            Some(Ended::ScaledIn)
        );
        assert_eq!(
            settled(later(300), Some(t0), settle, 0),
            Some(Ended::LoadDone)
        );
    }
}
