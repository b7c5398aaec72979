//! What the load did, shared between the load (which records) and the timeline (which samples
//! once a second): requests sent, acknowledged and failed, and latency histograms for the last
//! second and for the whole run. The HTTP engine records each response; the CoAP Job reports
//! sensor-sim's own counts and percentiles, which the meter passes on.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::profile::Thresholds;

pub use iot_common::load_progress::Percentiles;

/// One threshold checked against the run's percentiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `p95` or `p99`.
    pub metric: &'static str,
    /// The run's percentile; `None` without any acknowledged request.
    pub value_ms: Option<f64>,
    /// The threshold.
    pub limit_ms: f64,
    /// At most the limit (Artillery's `ensure` passes the same way). No samples fails.
    pub pass: bool,
}

/// One verdict per threshold set, against the whole run's percentiles.
pub fn judge(thresholds: &Thresholds, total: Option<&Percentiles>) -> Vec<Verdict> {
    let checks = [
        ("p95", thresholds.p95_ms, total.map(|p| p.p95_ms)),
        ("p99", thresholds.p99_ms, total.map(|p| p.p99_ms)),
    ];
    checks
        .into_iter()
        .filter_map(|(metric, limit, value)| {
            let limit_ms = limit?;
            Some(Verdict {
                metric,
                value_ms: value,
                limit_ms,
                pass: value.is_some_and(|v| v <= limit_ms),
            })
        })
        .collect()
}

/// One second of load, as the timeline records it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadSample {
    /// Virtual users running (HTTP load only).
    pub users: Option<u64>,
    /// Requests or readings sent since the start.
    pub sent: u64,
    /// Acknowledged since the start.
    pub acked: u64,
    /// Given up since the start.
    pub failed: u64,
    /// Latency of what was acknowledged since the previous sample.
    pub window: Option<Percentiles>,
}

/// What the load did, counted by the load itself (HTTP) or reported by sensor-sim (CoAP), read
/// once a second by the recorder.
#[derive(Default)]
pub struct LoadMeter {
    inner: Mutex<Inner>,
}

struct Inner {
    users: Option<u64>,
    sent: u64,
    acked: u64,
    failed: u64,
    window: Histogram<u64>,
    total: Histogram<u64>,
    /// Percentiles reported by a load generator that keeps its own histograms.
    reported_window: Option<Percentiles>,
    reported_total: Option<Percentiles>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            users: None,
            sent: 0,
            acked: 0,
            failed: 0,
            window: histogram(),
            total: histogram(),
            reported_window: None,
            reported_total: None,
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits: constant bounds that `new_with_bounds` accepts.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid constant histogram bounds")
}

impl LoadMeter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; they are still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A virtual user started its flow.
    pub fn user_started(&self) {
        let mut i = self.lock();
        i.users = Some(i.users.unwrap_or(0) + 1);
    }

    /// A virtual user finished (or was cut short).
    pub fn user_finished(&self) {
        let mut i = self.lock();
        i.users = Some(i.users.unwrap_or(1).saturating_sub(1));
    }

    /// A request was sent.
    pub fn sent(&self) {
        self.lock().sent += 1;
    }

    /// A request answered successfully after `latency`.
    pub fn acked(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 600_000_000);
        let mut i = self.lock();
        i.acked += 1;
        // Clamped into the histogram's bounds, so recording cannot fail.
        let _ = i.window.record(micros);
        let _ = i.total.record(micros);
    }

    /// A request failed: anything but a 2xx with its whole body read, a timeout included.
    pub fn failed(&self) {
        self.lock().failed += 1;
    }

    /// Counts and percentiles from a load generator that measures itself (sensor-sim).
    pub fn report(
        &self,
        sent: u64,
        acked: u64,
        failed: u64,
        window: Option<Percentiles>,
        total: Option<Percentiles>,
    ) {
        let mut i = self.lock();
        (i.sent, i.acked, i.failed) = (sent, acked, failed);
        i.reported_window = window;
        if total.is_some() {
            i.reported_total = total;
        }
    }

    /// This second's sample; starts the next window.
    pub fn sample(&self) -> LoadSample {
        let mut i = self.lock();
        let window = Percentiles::of(&i.window).or(i.reported_window.take());
        i.window.reset();
        LoadSample {
            users: i.users,
            sent: i.sent,
            acked: i.acked,
            failed: i.failed,
            window,
        }
    }

    /// Percentiles over the whole run so far.
    pub fn total(&self) -> Option<Percentiles> {
        let i = self.lock();
        Percentiles::of(&i.total).or(i.reported_total)
    }

    /// Sent, acknowledged and failed so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let i = self.lock();
        (i.sent, i.acked, i.failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_acknowledged() {
        let m = LoadMeter::default();
        for ms in 1..=100 {
            m.sent();
            m.acked(Duration::from_millis(ms));
        }
        m.sent();
        m.failed();
        let s = m.sample();
        assert_eq!((s.sent, s.acked, s.failed), (101, 100, 1));
        let w = s.window.unwrap();
        assert!((w.p50_ms - 50.0).abs() < 0.1, "{w:?}");
        assert!((w.p95_ms - 95.0).abs() < 0.1, "{w:?}");
        assert!((w.p99_ms - 99.0).abs() < 0.1, "{w:?}");
        assert_eq!(w.count, 100);
    }

    #[test]
    fn each_sample_starts_a_new_window_but_the_total_keeps_everything() {
        let m = LoadMeter::default();
        m.acked(Duration::from_millis(10));
        assert!(m.sample().window.is_some());
        assert!(m.sample().window.is_none());
        m.acked(Duration::from_millis(30));
        assert_eq!(m.sample().window.unwrap().count, 1);
        assert_eq!(m.total().unwrap().count, 2);
    }

    #[test]
    fn reported_figures_pass_through_once() {
        let m = LoadMeter::default();
        let p = Percentiles {
            p99_ms: 4.0,
            count: 7,
            ..Percentiles::default()
        };
        m.report(10, 9, 1, Some(p), Some(p));
        let s = m.sample();
        assert_eq!((s.sent, s.acked, s.failed, s.users), (10, 9, 1, None));
        assert_eq!(s.window, Some(p));
        assert_eq!(m.sample().window, None);
        assert_eq!(m.total(), Some(p));
    }

    #[test]
    fn thresholds_pass_at_the_limit_and_fail_above_or_without_samples() {
        let t = Thresholds {
            p95_ms: Some(75.0),
            p99_ms: Some(100.0),
        };
        let p = Percentiles {
            p95_ms: 75.0,
            p99_ms: 100.5,
            ..Percentiles::default()
        };
        let v = judge(&t, Some(&p));
        assert_eq!(
            v.iter().map(|v| (v.metric, v.pass)).collect::<Vec<_>>(),
            vec![("p95", true), ("p99", false)]
        );
        assert!(judge(&t, None).iter().all(|v| !v.pass));
        assert!(judge(&Thresholds::default(), Some(&p)).is_empty());
    }
}
