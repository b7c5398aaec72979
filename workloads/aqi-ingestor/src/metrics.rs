//! The ingestor's Prometheus metrics, all under `aqi_`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ingest::RecordOutcome;
use crate::poll::{PollOutcome, PollReport};
use crate::service::{CycleReport, Service, UpstreamState};
use crate::transform::Feed;
use crate::values::SkipReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedOutcome {
    feed: &'static str,
    outcome: &'static str,
}

iot_common::metric_set! {
    #[derive(Clone)]
    pub(crate) struct Metrics in "aqi" {
        /// Polls of the source, by outcome
        polls: Family<Outcome, Counter>,
        /// Snapshot records processed, by outcome (new = written as a reading)
        records: Family<Outcome, Counter>,
        /// Readings (points) the sink accepted: InfluxDB, or stdout in a dry run
        readings_written: Counter,
        /// Readings InfluxDB refused for good (field type conflict, limits); not offered again
        readings_rejected: Counter,
        /// Sensor values written as fields of new readings
        values_written: Counter,
        /// Values of new readings that were not written, by reason
        values_skipped: Family<Reason, Counter>,
        /// New PM readings of indoor sensors, written without an air quality index
        indoor_without_aqi: Counter,
        /// Snapshot body bytes received (after decompression)
        #[metric("downloaded", Bytes)]
        downloaded: Counter,
        /// Unix time of the end of the last poll that left the ingestor up to date
        #[metric("last_success_timestamp", Seconds)]
        last_success: Gauge<f64, AtomicU64>,
        /// Duration of a poll: fetch, processing and writes
        #[metric("poll_duration", Seconds)]
        poll_seconds: Histogram = Histogram::new(exponential_buckets(0.005, 2.0, 14)),
        /// Sensors whose newest stored reading is remembered
        #[metric("tracked_sensors")]
        sensors: Gauge,
        /// Polls by feed (daily = 24-hour means, readings = 5-minute readings) and outcome
        feed_polls: Family<FeedOutcome, Counter>,
        /// 24-hour means computed here from 5-minute readings and written (origin=computed)
        #[metric("computed_means_written")]
        means_written: Counter,
        /// Computed 24-hour means written without an index: under 75 % of the day covered
        #[metric("computed_means_without_index")]
        means_without_index: Counter,
        /// 1 while the upstream 24-hour file gives the index, 0 while computed means stand in
        upstream_usable: Gauge,
        /// Sensors with a 24-hour window of 5-minute readings
        window_sensors: Gauge,
        /// Memory held by the 24-hour windows
        #[metric("window", Bytes)]
        window_bytes: Gauge,
    }
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        m.register_in(registry);
        for feed in [Feed::Daily, Feed::Readings] {
            for o in PollOutcome::ALL {
                m.feed_polls
                    .get_or_create(&FeedOutcome {
                        feed: feed.as_str(),
                        outcome: o.as_str(),
                    })
                    .inc_by(0);
            }
        }
        // Every label value exists from the start, so rates and alerts see zeros, not gaps.
        for o in PollOutcome::ALL {
            m.polls
                .get_or_create(&Outcome {
                    outcome: o.as_str(),
                })
                .inc_by(0);
        }
        for o in RecordOutcome::ALL {
            m.records
                .get_or_create(&Outcome {
                    outcome: o.as_str(),
                })
                .inc_by(0);
        }
        for r in SkipReason::ALL {
            m.values_skipped
                .get_or_create(&Reason { reason: r.as_str() })
                .inc_by(0);
        }

        m
    }

    /// Everything a cycle of polls did.
    pub(crate) fn record_cycle(&self, cycle: &CycleReport, service: &Service) {
        for report in &cycle.polls {
            self.record_poll(report);
        }
        if let Some(m) = &cycle.means {
            self.means_written.inc_by(m.written);
            self.means_without_index.inc_by(m.without_index);
        }
        self.upstream_usable
            .set(i64::from(cycle.upstream == UpstreamState::Usable));
        if let Some(means) = &service.means {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.window_sensors.set(gauge(means.windows.len()));
            self.window_bytes.set(gauge(means.windows.bytes()));
        }
        if cycle.is_success() {
            self.set_last_success();
        }
        self.sensors
            .set(i64::try_from(service.tracked_sensors()).unwrap_or(i64::MAX));
    }

    fn set_last_success(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }

    fn record_poll(&self, report: &PollReport) {
        self.feed_polls
            .get_or_create(&FeedOutcome {
                feed: report.feed.as_str(),
                outcome: report.outcome.as_str(),
            })
            .inc();
        self.polls
            .get_or_create(&Outcome {
                outcome: report.outcome.as_str(),
            })
            .inc();
        for o in RecordOutcome::ALL {
            let n = report.stats.records(o);
            if n > 0 {
                self.records
                    .get_or_create(&Outcome {
                        outcome: o.as_str(),
                    })
                    .inc_by(n);
            }
        }
        for r in SkipReason::ALL {
            let n = report.stats.values.skipped(r);
            if n > 0 {
                self.values_skipped
                    .get_or_create(&Reason { reason: r.as_str() })
                    .inc_by(n);
            }
        }
        self.readings_written.inc_by(report.written);
        self.readings_rejected.inc_by(report.rejected);
        self.values_written.inc_by(report.stats.values.written);
        self.indoor_without_aqi
            .inc_by(report.stats.values.indoor_without_aqi);
        self.downloaded.inc_by(report.bytes);
        self.poll_seconds.observe(report.elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_report_shows_up_in_the_exposition() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        let mut report = PollReport {
            outcome: PollOutcome::Written,
            written: 3,
            bytes: 1000,
            ..PollReport::default()
        };
        report.stats.records[RecordOutcome::New.index()] = 3;
        report.stats.values.skipped[SkipReason::Nan.index()] = 2;
        m.record_poll(&report);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for want in [
            r#"aqi_polls_total{outcome="written"} 1"#,
            r#"aqi_polls_total{outcome="bad_body"} 0"#,
            r#"aqi_records_total{outcome="new"} 3"#,
            r#"aqi_values_skipped_total{reason="nan"} 2"#,
            r#"aqi_values_skipped_total{reason="out_of_range"} 0"#,
            "aqi_readings_written_total 3",
            "aqi_downloaded_bytes_total 1000",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
