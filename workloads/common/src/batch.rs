//! Batching in front of [`InfluxClient`]: points are collected until `max_points` are waiting or
//! the oldest has waited `linger`, then written in one request. Up to `max_in_flight` batches are
//! written at once. Each point carries a context `T` that is handed back with the batch's outcome,
//! so a caller can acknowledge exactly the readings that are stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::influx::{InfluxClient, WriteError};
use crate::retry::RetryPolicy;

#[derive(Clone, Debug)]
pub struct BatchConfig {
    pub max_points: usize,
    pub linger: Duration,
    pub max_in_flight: usize,
    /// Points that may wait to be batched before `try_submit` reports `Full`.
    pub queue_capacity: usize,
    pub retry: RetryPolicy,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_points: 1000,
            linger: Duration::from_millis(20),
            max_in_flight: 4,
            queue_capacity: 20_000,
            retry: RetryPolicy::interactive(),
        }
    }
}

/// Called once per batch with the contexts of its points and the outcome of the write.
pub type OnWritten<T> = Arc<dyn Fn(Vec<T>, Result<(), &WriteError>) + Send + Sync>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the write queue is full")]
    Full,
    #[error("the writer has shut down")]
    Closed,
}

/// Metrics of the writer, registered under the caller's registry.
#[derive(Clone)]
pub struct WriterMetrics {
    points_written: Counter,
    points_failed: Counter,
    write_errors: Family<ErrorLabels, Counter>,
    batch_points: Histogram,
    write_seconds: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

impl WriterMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = WriterMetrics {
            points_written: Counter::default(),
            points_failed: Counter::default(),
            write_errors: Family::default(),
            batch_points: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        let r = registry.sub_registry_with_prefix("influx");
        r.register(
            "points_written",
            "Points InfluxDB accepted",
            m.points_written.clone(),
        );
        r.register(
            "points_failed",
            "Points whose write failed after retries",
            m.points_failed.clone(),
        );
        r.register(
            "write_errors",
            "Failed write requests by kind",
            m.write_errors.clone(),
        );
        r.register(
            "batch_points",
            "Points per write request",
            m.batch_points.clone(),
        );
        r.register(
            "write_seconds",
            "Latency of one batch write, retries included",
            m.write_seconds.clone(),
        );
        m
    }
}

enum Msg<T> {
    Point(String, T),
    Flush(oneshot::Sender<()>),
}

pub struct BatchWriter<T> {
    tx: mpsc::Sender<Msg<T>>,
    task: JoinHandle<()>,
}

impl<T: Send + 'static> BatchWriter<T> {
    pub fn spawn(
        client: InfluxClient,
        config: BatchConfig,
        metrics: WriterMetrics,
        on_written: OnWritten<T>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let task = tokio::spawn(run(client, config, metrics, on_written, rx));
        BatchWriter { tx, task }
    }

    /// Queues one line of line protocol (with its trailing newline). Never waits: when the queue
    /// is full the caller learns it at once and can shed load (a CoAP 5.03, say).
    pub fn try_submit(&self, line: String, ctx: T) -> Result<(), SubmitError> {
        self.tx
            .try_send(Msg::Point(line, ctx))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Full,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })
    }

    /// Queues one line, waiting for room in the queue.
    pub async fn submit(&self, line: String, ctx: T) -> Result<(), SubmitError> {
        self.tx
            .send(Msg::Point(line, ctx))
            .await
            .map_err(|_| SubmitError::Closed)
    }

    /// Returns once every point submitted before this call has been written (or has failed).
    pub async fn flush(&self) -> Result<(), SubmitError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| SubmitError::Closed)?;
        wait.await.map_err(|_| SubmitError::Closed)
    }

    /// Writes what is queued, waits for writes in flight, and stops.
    pub async fn close(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "batch writer task failed");
        }
    }
}

/// The writer task's state: the batch being filled and what it needs to write one.
struct Batcher<T> {
    client: InfluxClient,
    config: BatchConfig,
    metrics: WriterMetrics,
    on_written: OnWritten<T>,
    slots: Arc<Semaphore>,
    body: String,
    ctxs: Vec<T>,
    /// When the first point of the current batch arrived.
    since: Option<Instant>,
}

async fn run<T: Send + 'static>(
    client: InfluxClient,
    config: BatchConfig,
    metrics: WriterMetrics,
    on_written: OnWritten<T>,
    mut rx: mpsc::Receiver<Msg<T>>,
) {
    let mut b = Batcher {
        slots: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
        client,
        config,
        metrics,
        on_written,
        body: String::new(),
        ctxs: Vec::new(),
        since: None,
    };
    loop {
        let linger_at = b.since.map(|s| s + b.config.linger);
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            _ = sleep_until(linger_at), if linger_at.is_some() => {
                b.flush().await;
                continue;
            }
        };
        match msg {
            Some(Msg::Point(line, ctx)) => {
                if b.ctxs.is_empty() {
                    b.since = Some(Instant::now());
                }
                b.body.push_str(&line);
                b.ctxs.push(ctx);
                if b.ctxs.len() >= b.config.max_points {
                    b.flush().await;
                }
            }
            Some(Msg::Flush(done)) => {
                b.flush().await;
                b.wait_idle().await;
                let _ = done.send(());
            }
            None => {
                b.flush().await;
                b.wait_idle().await;
                return;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Waits for a free slot, then writes the current batch in the background so the next one
    /// can fill meanwhile. Nothing to do for an empty batch.
    async fn flush(&mut self) {
        if self.ctxs.is_empty() {
            return;
        }
        let body = std::mem::take(&mut self.body);
        let ctxs = std::mem::take(&mut self.ctxs);
        self.since = None;
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let (client, policy, metrics, on_written) = (
            self.client.clone(),
            self.config.retry.clone(),
            self.metrics.clone(),
            self.on_written.clone(),
        );
        tokio::spawn(async move {
            let n = ctxs.len() as u64;
            let started = Instant::now();
            let result = client.write_with_retry(body, &policy).await;
            metrics
                .write_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.batch_points.observe(n as f64);
            match &result {
                Ok(()) => {
                    metrics.points_written.inc_by(n);
                }
                Err(e) => {
                    metrics.points_failed.inc_by(n);
                    metrics
                        .write_errors
                        .get_or_create(&ErrorLabels { kind: e.kind() })
                        .inc();
                    tracing::warn!(error = %e, points = n, "batch write failed");
                }
            }
            on_written(ctxs, result.as_ref().map(|_| ()));
            drop(permit);
        });
    }

    /// Returns when no write is in flight.
    async fn wait_idle(&mut self) {
        let n = self.config.max_in_flight.max(1) as u32;
        if let Ok(all) = self.slots.acquire_many(n).await {
            drop(all);
        }
    }
}
