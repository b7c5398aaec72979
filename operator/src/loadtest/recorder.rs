//! The recorder: once a second, the cluster sample and the load sample become timeline rows,
//! appended to `timeline.csv` and flushed (a run cut short keeps every second it had). It ends
//! at its deadline, on Ctrl-C, or `settle` after the load reports done.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::Write as _;
use tokio::sync::watch;

use super::meter::LoadMeter;
use super::sampler::Sampler;
use super::timeline::{HEADER, Row, Sample};

/// When the recorder stops.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Never record past this.
    pub deadline: Instant,
    /// Keep recording this long after the load has finished (to see the scale-in).
    pub settle: Duration,
}

/// Why the recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    LoadDone,
    Deadline,
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
        if load_done
            .borrow()
            .is_some_and(|done| now >= done + bounds.settle)
        {
            break Ended::LoadDone;
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
