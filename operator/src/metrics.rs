//! Operator metrics in the OpenMetrics format: reconciles by result, errors by category,
//! reconcile durations, writes to the API server and leadership.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: &'static str,
    pub verb: &'static str,
}

iot_common::metric_set! {
    #[derive(Debug)]
    pub struct Metrics in "iot_operator" {
        /// Reconciles by result
        pub reconciles: Family<ResultLabels, Counter>,
        /// Failed reconciles by error category
        #[metric("reconcile_errors")]
        pub errors: Family<CategoryLabels, Counter>,
        /// Duration of one reconcile
        #[metric("reconcile_duration_seconds")]
        pub duration: Histogram = Histogram::new(exponential_buckets(0.005, 2.0, 14)),
        /// Writes to the API server by kind and verb (a no-op reconcile writes nothing)
        #[metric("api_writes")]
        pub writes: Family<WriteLabels, Counter>,
        /// 1 while this replica holds the leader lease
        pub leader: Gauge,
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.register_in(registry);
        // Both results exist from the start, so rate() works before the first failure.
        for result in ["success", "error"] {
            let _ = metrics.reconciles.get_or_create(&ResultLabels { result });
        }
        metrics
    }

    /// Starts timing a reconcile; the duration is recorded when the guard drops, on every path.
    pub fn start_reconcile(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            histogram: &self.duration,
            start: Instant::now(),
        }
    }

    pub fn record_success(&self) {
        self.reconciles
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
    }

    pub fn record_error(&self, category: &'static str) {
        self.reconciles
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
        self.errors
            .get_or_create(&CategoryLabels { category })
            .inc();
    }

    pub fn record_write(&self, kind: &'static str, verb: &'static str) {
        self.writes.get_or_create(&WriteLabels { kind, verb }).inc();
    }
}

pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_the_operator_prefix() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.record_error("ApplyFailed");
        metrics.record_success();
        drop(metrics.start_reconcile());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("iot_operator_reconcile_errors_total{category=\"ApplyFailed\"} 1"),
            "{text}"
        );
        assert!(text.contains("iot_operator_reconciles_total{result=\"success\"} 1"));
        assert!(text.contains("iot_operator_reconcile_duration_seconds_count 1"));
    }
}
