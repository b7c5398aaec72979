//! The server's answers, reported to InfluxDB: every interval one point of the measurement
//! `coap_server` (tag `pod`; fields `datagrams`, `refused`, `unavailable`: counts within the
//! interval). Grafana reads only InfluxDB, so this is what its IngestFailing rule sums; the
//! Prometheus path reads the same totals from `/metrics`.
//!
//! A report InfluxDB does not take is not lost: its counts join the next one, so once InfluxDB
//! is back the sums over any window that includes the gap are right.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iot_common::lineproto::Line;
use iot_common::{InfluxClient, Shutdown};

pub use crate::metrics::AnswerCounts;

/// The measurement of the reports.
pub const MEASUREMENT: &str = "coap_server";

/// The totals at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub datagrams: u64,
    pub refused: u64,
    pub unavailable: u64,
}

impl AnswerCounts {
    /// The totals now.
    pub fn totals(&self) -> Totals {
        Totals {
            datagrams: self.datagrams.get(),
            refused: self.refused.get(),
            unavailable: self.unavailable.get(),
        }
    }
}

impl Totals {
    /// What was counted since `earlier` (counters only grow).
    fn since(self, earlier: Totals) -> Totals {
        Totals {
            datagrams: self.datagrams.saturating_sub(earlier.datagrams),
            refused: self.refused.saturating_sub(earlier.refused),
            unavailable: self.unavailable.saturating_sub(earlier.unavailable),
        }
    }
}

/// One report as line protocol.
pub fn line(pod: &str, counts: Totals, timestamp_ns: i64) -> String {
    let mut buf = String::with_capacity(96);
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Line::new(&mut buf, MEASUREMENT)
        .tag("pod", pod)
        .field_i64("datagrams", clamp(counts.datagrams))
        .field_i64("refused", clamp(counts.refused))
        .field_i64("unavailable", clamp(counts.unavailable))
        .finish(timestamp_ns);
    buf
}

/// Writes a report of `counts` every `every` until `stop` is triggered, then one last one.
pub async fn report_answers(
    client: InfluxClient,
    counts: AnswerCounts,
    pod: String,
    every: Duration,
    stop: Shutdown,
) {
    let mut reported = Totals::default();
    let mut failing = false;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            () = &mut stopped => true,
        };
        let now = counts.totals();
        let body = line(&pod, now.since(reported), unix_ns());
        match client.write(body).await {
            Ok(()) => {
                reported = now;
                if failing {
                    tracing::info!("answer report written again");
                }
                failing = false;
            }
            // Once per streak: InfluxDB being down is already logged by the writer.
            Err(e) if !failing => {
                tracing::warn!(error = %e, "answer report not written; its counts join the next");
                failing = true;
            }
            Err(_) => {}
        }
        if last {
            return;
        }
    }
}

fn unix_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_one_line_of_integer_counts() {
        let counts = Totals {
            datagrams: 120,
            refused: 7,
            unavailable: 3,
        };
        assert_eq!(
            line("coap-server-6d9f-x2", counts, 1_700_000_000_000_000_000),
            "coap_server,pod=coap-server-6d9f-x2 datagrams=120i,refused=7i,unavailable=3i 1700000000000000000\n"
        );
    }

    #[test]
    fn a_pod_name_with_separators_stays_one_tag() {
        let text = line("a b,c=d", Totals::default(), 1);
        assert!(
            text.starts_with(r"coap_server,pod=a\ b\,c\=d datagrams=0i"),
            "{text}"
        );
    }

    #[test]
    fn counts_since_an_earlier_report() {
        let counts = AnswerCounts::default();
        counts.datagrams.inc_by(10);
        counts.refused.inc_by(2);
        let first = counts.totals();
        counts.datagrams.inc_by(5);
        counts.unavailable.inc();
        assert_eq!(
            counts.totals().since(first),
            Totals {
                datagrams: 5,
                refused: 0,
                unavailable: 1
            }
        );
    }
}
