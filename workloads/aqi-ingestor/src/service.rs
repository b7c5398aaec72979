//! One cycle of the ingestor: the 5-minute readings, then the upstream 24-hour file, then our own
//! 24-hour means wherever the upstream file cannot be used.
//!
//! The upstream file is **usable** when its last poll succeeded (a `304` keeps the verdict on
//! the snapshot it refers to) and the newest record of that snapshot is at most
//! `max_upstream_age` old. It is not when it is empty (`[]`, or nothing in the region), when the
//! poll failed, or when it is stale. Computed means are written only while it is not usable (or
//! always, without an upstream source).
//!
//! Both kinds of mean go into one series per sensor (`air_quality`, told apart by the `origin`
//! field) and are admitted by one set of watermarks: a point is written only when it is later
//! than every stored point of its sensor, upstream or computed. So when the upstream file
//! returns, its records that are not later than the last computed mean are skipped, and from then
//! on only upstream points are written: no sensor ever has two means at one time, nor an older
//! mean after a newer one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::means::Windows;
use crate::poll::{self, PollOutcome, PollReport, Poller};
use crate::sink::{Batch, Sink, SinkError};
use crate::timestamp::EpochSeconds;
use crate::watermark::{Admission, Watermarks};

/// Our own means: the windows and where their points go.
#[derive(Debug)]
pub(crate) struct Means {
    pub(crate) windows: Windows,
    /// Watermarks of `air_quality` when there is no upstream feed (else that poller's).
    pub(crate) watermarks: Watermarks,
    pub(crate) sink: Sink,
    pub(crate) batch_lines: usize,
}

/// What the upstream file's last polls said.
#[derive(Clone, Copy, Debug, Default)]
struct Upstream {
    /// The newest record of the last snapshot processed; `None` when it held none.
    newest: Option<EpochSeconds>,
    /// The last poll failed (fetch, body or write).
    failed: bool,
}

impl Upstream {
    fn record(&mut self, r: &PollReport) {
        match r.outcome {
            PollOutcome::Written | PollOutcome::NoNew | PollOutcome::Rejected => {
                self.failed = false;
                self.newest = (r.stats.newest != 0).then_some(r.stats.newest);
            }
            PollOutcome::Empty => {
                self.failed = false;
                self.newest = None;
            }
            PollOutcome::NotModified => self.failed = false,
            PollOutcome::FetchError | PollOutcome::BadBody | PollOutcome::WriteError => {
                self.failed = true;
            }
        }
    }

    fn state(&self, now: u64, max_age: Duration) -> UpstreamState {
        match self.newest {
            _ if self.failed => UpstreamState::Failing,
            None => UpstreamState::Empty,
            Some(t) if now.saturating_sub(u64::from(t)) > max_age.as_secs() => UpstreamState::Stale,
            Some(_) => UpstreamState::Usable,
        }
    }
}

/// Whether the upstream 24-hour file gives the index, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpstreamState {
    Usable,
    Empty,
    Failing,
    Stale,
    /// There is no upstream source (`--source 5min`).
    Absent,
}

impl UpstreamState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamState::Usable => "usable",
            UpstreamState::Empty => "empty",
            UpstreamState::Failing => "failing",
            UpstreamState::Stale => "stale",
            UpstreamState::Absent => "absent",
        }
    }
}

/// What writing the computed means did.
#[derive(Debug, Default)]
pub(crate) struct MeansReport {
    /// Mean points written (or refused for good).
    pub(crate) written: u64,
    /// Of those, points without an index (below 75 % coverage).
    pub(crate) without_index: u64,
    pub(crate) rejected: u64,
    pub(crate) error: Option<SinkError>,
}

/// Everything one cycle did.
#[derive(Debug)]
pub(crate) struct CycleReport {
    pub(crate) polls: Vec<PollReport>,
    pub(crate) upstream: UpstreamState,
    /// `None` when no means were due (upstream usable, or no readings feed).
    pub(crate) means: Option<MeansReport>,
}

impl CycleReport {
    /// Every poll and the means write succeeded.
    pub(crate) fn is_success(&self) -> bool {
        self.polls.iter().all(|p| p.outcome.is_success())
            && self.means.as_ref().is_none_or(|m| m.error.is_none())
    }
}

#[derive(Debug)]
pub(crate) struct Service {
    /// The 24-hour means feed.
    pub(crate) daily: Option<Poller>,
    /// The 5-minute readings feed; with it come [`Means`].
    pub(crate) readings: Option<Poller>,
    pub(crate) means: Option<Means>,
    pub(crate) max_upstream_age: Duration,
    upstream: Upstream,
}

impl Service {
    pub(crate) fn new(
        daily: Option<Poller>,
        readings: Option<Poller>,
        means: Option<Means>,
        max_upstream_age: Duration,
    ) -> Self {
        Service {
            daily,
            readings,
            means,
            max_upstream_age,
            upstream: Upstream::default(),
        }
    }

    /// Sensors with a watermark, over both feeds.
    pub(crate) fn tracked_sensors(&self) -> usize {
        let len = |p: &Option<Poller>| p.as_ref().map_or(0, |p| p.watermarks.len());
        len(&self.daily) + len(&self.readings)
    }

    pub(crate) async fn cycle(&mut self) -> CycleReport {
        let mut polls = Vec::with_capacity(2);
        if let Some(p) = &mut self.readings {
            let mut report = p.poll().await;
            if let Some(m) = &mut self.means {
                for r in report.readings.drain(..) {
                    m.windows.add(&r);
                }
                m.windows.evict();
            }
            polls.push(report);
        }
        let upstream = match &mut self.daily {
            Some(p) => {
                let report = p.poll().await;
                self.upstream.record(&report);
                polls.push(report);
                self.upstream.state(now(), self.max_upstream_age)
            }
            None => UpstreamState::Absent,
        };
        let means = match &mut self.means {
            Some(m) if upstream != UpstreamState::Usable => Some(match &mut self.daily {
                Some(p) => m.write(&mut p.watermarks).await,
                None => {
                    // Its own watermarks, lent out for the write (a cancelled cycle means the
                    // process is stopping).
                    let mut marks = std::mem::take(&mut m.watermarks);
                    let report = m.write(&mut marks).await;
                    m.watermarks = marks;
                    report
                }
            }),
            _ => None,
        };
        CycleReport {
            polls,
            upstream,
            means,
        }
    }
}

impl Means {
    /// Writes the mean of every sensor whose newest reading is later than its newest stored
    /// mean (upstream or computed), in sensor order.
    pub(crate) async fn write(&mut self, marks: &mut Watermarks) -> MeansReport {
        let mut out = MeansReport::default();
        // Scratch report for the shared flush (it counts written and rejected lines).
        let mut flushed = PollReport::default();
        marks.abort();
        let mut batch = Batch::default();
        let threshold = self.batch_lines.max(1);
        for (sensor, time) in self.windows.complete() {
            if marks.stored(sensor).is_some_and(|t| t >= time) {
                continue;
            }
            let Some(indexed) = self.windows.append_line(batch.body_mut(), sensor) else {
                continue;
            };
            batch.end_line(sensor);
            // Not yet stored (checked above) and once per sensor: always new.
            let admitted = marks.admit(sensor, time);
            debug_assert_eq!(admitted, Admission::New);
            out.without_index += u64::from(!indexed);
            if batch.lines() >= threshold
                && let Err(e) = poll::flush(&mut self.sink, &mut batch, marks, &mut flushed).await
            {
                marks.abort();
                out.error = Some(e);
                return out;
            }
        }
        if let Err(e) = poll::flush(&mut self.sink, &mut batch, marks, &mut flushed).await {
            marks.abort();
            out.error = Some(e);
            return out;
        }
        marks.commit();
        out.written = flushed.written;
        out.rejected = flushed.rejected;
        out
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: PollOutcome, newest: EpochSeconds) -> PollReport {
        let mut r = PollReport {
            outcome,
            ..PollReport::default()
        };
        r.stats.newest = newest;
        r
    }

    #[test]
    fn the_upstream_file_is_usable_only_when_fresh_and_polled_fine() {
        let hour = Duration::from_secs(3600);
        let now = 2_000_000_000u64;
        let fresh = (now - 600) as EpochSeconds;
        let mut u = Upstream::default();
        assert_eq!(u.state(now, hour), UpstreamState::Empty, "nothing seen yet");
        u.record(&report(PollOutcome::Written, fresh));
        assert_eq!(u.state(now, hour), UpstreamState::Usable);
        u.record(&report(PollOutcome::NotModified, 0));
        assert_eq!(u.state(now, hour), UpstreamState::Usable, "304 keeps it");
        assert_eq!(
            u.state(now + 3600, hour),
            UpstreamState::Stale,
            "an unchanged file ages"
        );
        u.record(&report(PollOutcome::FetchError, 0));
        assert_eq!(u.state(now, hour), UpstreamState::Failing);
        u.record(&report(PollOutcome::NotModified, 0));
        assert_eq!(u.state(now, hour), UpstreamState::Usable);
        u.record(&report(PollOutcome::Empty, 0));
        assert_eq!(u.state(now, hour), UpstreamState::Empty);
        u.record(&report(PollOutcome::NoNew, (now - 7200) as EpochSeconds));
        assert_eq!(u.state(now, hour), UpstreamState::Stale);
        u.record(&report(PollOutcome::NoNew, 0));
        assert_eq!(
            u.state(now, hour),
            UpstreamState::Empty,
            "no record in the region"
        );
        u.record(&report(PollOutcome::BadBody, fresh));
        assert_eq!(u.state(now, hour), UpstreamState::Failing);
    }
}
