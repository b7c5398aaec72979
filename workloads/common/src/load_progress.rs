//! The wire format of `sensor-sim load --json`: one JSON progress line a second on stderr,
//! written by sensor-sim and read back by `iot-loadtest` from the load Job's log. One
//! type on both sides, so the two cannot drift (docs/data-plane.md describes the fields).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The `event` tag that marks a progress line among sensor-sim's other log lines.
const EVENT: &str = "progress";

/// Latency percentiles in milliseconds (`null` in JSON when nothing was acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Samples the percentiles were computed from.
    pub count: u64,
}

impl Percentiles {
    /// Percentiles of a histogram of microseconds; `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        (!h.is_empty()).then(|| Self {
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
            max_ms: h.max() as f64 / 1000.0,
            count: h.len(),
        })
    }
}

/// One progress line. Counts are totals since the start; `window` covers the readings
/// acknowledged since the previous line, `total` the whole run. The line with `done: true`
/// comes once, after the drain.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub elapsed_secs: f64,
    pub readings: u64,
    pub acked: u64,
    pub failed: u64,
    #[serde(default)]
    pub retransmissions: u64,
    #[serde(default)]
    pub unavailable: u64,
    /// Acknowledged in the last second (`null` on the last line, which covers the drain).
    #[serde(default)]
    pub acked_per_sec: Option<f64>,
    pub window: Option<Percentiles>,
    pub total: Option<Percentiles>,
    #[serde(default)]
    pub done: bool,
}

#[derive(Serialize, Deserialize)]
struct Tagged<P> {
    event: String,
    #[serde(flatten)]
    progress: P,
}

impl Progress {
    /// The line as sensor-sim prints it: `{"event":"progress",...}`.
    pub fn to_line(&self) -> String {
        let tagged = Tagged {
            event: EVENT.to_owned(),
            progress: self,
        };
        serde_json::to_string(&tagged).unwrap_or_default()
    }

    /// A log line → progress, if it is one (other lines are sensor-sim's own logs).
    pub fn from_line(line: &str) -> Option<Self> {
        let line = line.trim();
        if !line.starts_with('{') {
            return None;
        }
        let tagged: Tagged<Progress> = serde_json::from_str(line).ok()?;
        (tagged.event == EVENT).then_some(tagged.progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for us in [1_000, 2_000, 3_000] {
            h.record(us).expect("in range");
        }
        let p = Progress {
            elapsed_secs: 3.0,
            readings: 30,
            acked: 29,
            retransmissions: 1,
            acked_per_sec: Some(10.0),
            window: Percentiles::of(&h),
            ..Progress::default()
        };
        let line = p.to_line();
        assert!(line.starts_with(r#"{"event":"progress","#), "{line}");
        assert_eq!(Progress::from_line(&line), Some(p));
    }

    #[test]
    fn only_progress_lines_are_picked_out_of_a_log() {
        let line = r#"{"event":"progress","elapsed_secs":3.0,"readings":30,"acked":29,"failed":0,"retransmissions":1,"unavailable":0,"acked_per_sec":10.0,"window":{"p50_ms":1.5,"p95_ms":2.0,"p99_ms":3.0,"max_ms":3.5,"count":10},"total":null,"done":false}"#;
        let p = Progress::from_line(line).expect("a progress line");
        assert_eq!((p.readings, p.acked, p.failed, p.done), (30, 29, 0, false));
        assert_eq!(p.window.map(|w| w.p99_ms), Some(3.0));
        assert!(p.total.is_none());
        for other in [
            "[   1.0s] sent 4  acked 0",
            r#"{"timestamp":"x","level":"WARN","message":"reading not stored"}"#,
            r#"{"event":"summary","readings":1,"acked":1,"failed":0,"window":null,"total":null}"#,
            "{",
            "",
        ] {
            assert!(Progress::from_line(other).is_none(), "{other}");
        }
    }

    #[test]
    fn an_empty_histogram_has_no_percentiles() {
        let h = Histogram::<u64>::new(3).expect("sigfig");
        assert_eq!(Percentiles::of(&h), None);
    }
}
