//! Batching in front of a [`Sink`] ([`InfluxClient`] in production) as a group commit: a point that finds InfluxDB idle is
//! written at once; points that arrive while writes are in flight gather, and go out together
//! when a write ends (or the batch is full). At most `max_in_flight` writes are in flight, so a
//! busy InfluxDB gets fewer, larger requests instead of more of them. While InfluxDB keeps up, a
//! waiting client pays one write when the load is light and about two when it is heavy (the one
//! ahead of it, then its own), never a fixed delay.
//!
//! Each point carries a context `T` that is handed back with its outcome, so a caller can
//! acknowledge exactly the readings that are stored. Points are written in the order they were
//! submitted, but batches in flight at the same time may end in any order.
//!
//! A batch InfluxDB stored in part ("partial write", or too large a body) is written again in
//! halves, and those halves that are stored in part again, until the fate of every point is
//! known: each point's context is handed back exactly once, as stored, refused for good or
//! unavailable. Writing a stored point again is harmless, because the lines are written again
//! as they were, timestamps included, and InfluxDB keeps one point per series and time. The
//! cost is a few writes per refused point (two per halving), not one per point of the batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// A batch's body as a [`Sink`] gets it: a shared slice of the batch's lines.
pub use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::influx::{InfluxClient, WriteError};
use crate::retry::RetryPolicy;
use crate::verdict::Verdict;

/// Where the writer's batches go: InfluxDB in production, an in-memory fake in tests. A generic
/// parameter of [`BatchWriter::spawn`] rather than a trait object, so each batch's write is a
/// direct call whose future is not boxed.
pub trait Sink: Clone + Send + Sync + 'static {
    /// Writes one body of line protocol (whole lines, nanosecond timestamps), trying again as
    /// `policy` allows while the failure is one that can heal. Its error is read as InfluxDB's
    /// answer would be ([`Verdict::of`]): a "partial write" makes the writer write the batch
    /// again in halves.
    fn write_batch(
        &self,
        body: Bytes,
        policy: &RetryPolicy,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;
}

impl Sink for InfluxClient {
    fn write_batch(
        &self,
        body: Bytes,
        policy: &RetryPolicy,
    ) -> impl Future<Output = Result<(), WriteError>> + Send {
        self.write_with_retry(body, policy)
    }
}

#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// Points per write request, at most.
    pub max_points: usize,
    /// Upper bound on how long a point waits for company while a write slot is free and other
    /// writes are in flight. Zero: a free slot is used at once.
    pub linger: Duration,
    /// Every batch waits the whole `linger` (or until full), even when InfluxDB is idle: the
    /// fixed linger of earlier versions, kept to compare against in benchmarks.
    pub fixed_linger: bool,
    /// Write requests in flight at the same time, at most.
    pub max_in_flight: usize,
    /// Points that may wait to be batched before `try_submit` reports `Full`.
    pub queue_capacity: usize,
    pub retry: RetryPolicy,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_points: 1000,
            linger: Duration::ZERO,
            fixed_linger: false,
            max_in_flight: 2,
            queue_capacity: 20_000,
            retry: RetryPolicy::interactive(),
        }
    }
}

/// Called with the contexts of points and what became of them; once for each point, with the
/// others of its batch (or of the part of it that shared its fate).
pub type OnWritten<T> = Arc<dyn Fn(Vec<T>, Written<'_>) + Send + Sync>;

/// What became of the points handed to [`OnWritten`].
#[derive(Clone, Copy, Debug)]
pub enum Written<'e> {
    /// InfluxDB stored them.
    Stored,
    /// InfluxDB refused them for good: writing them again cannot store them.
    Refused(&'e WriteError),
    /// They are not stored, through no fault of theirs; they can be written again later.
    Unavailable(&'e WriteError),
}

impl Written<'_> {
    pub fn is_stored(&self) -> bool {
        matches!(self, Written::Stored)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the write queue is full")]
    Full,
    #[error("the writer has shut down")]
    Closed,
}

crate::metric_set! {
    /// Metrics of the writer, registered under the caller's registry.
    #[derive(Clone)]
    pub struct WriterMetrics in "influx" {
        /// Points InfluxDB accepted
        points_written: Counter,
        /// Points whose write failed after retries, and may be written again later
        points_failed: Counter,
        /// Points InfluxDB refused for good (dropped by a partial write, or bad)
        points_refused: Counter,
        /// Writes of part of a batch that InfluxDB had stored in part, to learn which points it refused
        partial_rewrites: Counter,
        /// Failed write requests by kind
        write_errors: Family<ErrorLabels, Counter>,
        /// Points per write request
        batch_points: Histogram = Histogram::new(exponential_buckets(1.0, 4.0, 9)),
        /// Latency of one batch write, retries included
        write_seconds: Histogram = Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        /// Write requests to InfluxDB in flight now
        writes_in_flight: Gauge,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

impl WriterMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = WriterMetrics::default();
        m.register_in(registry);
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
    /// Starts the writer task, which writes to `sink`; must be called within a Tokio runtime.
    pub fn spawn<S: Sink>(
        sink: S,
        config: BatchConfig,
        metrics: WriterMetrics,
        on_written: OnWritten<T>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let task = tokio::spawn(run(sink, config, metrics, on_written, rx));
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

    /// As [`BatchWriter::close`], but gives up after `limit`: writes still in flight then are
    /// abandoned, and the points still queued are dropped without being handed back. None of
    /// them is counted as written, and their senders, never answered, send them again. Whether
    /// everything was written in time.
    pub async fn close_within(mut self, limit: Duration) -> bool {
        drop(self.tx);
        match tokio::time::timeout(limit, &mut self.task).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "batch writer task failed");
                false
            }
            Err(_) => {
                // Dropping the task's state aborts the writes it started.
                self.task.abort();
                let _ = self.task.await;
                false
            }
        }
    }
}

/// What the writer knows when it decides whether to write the batch it has gathered.
#[derive(Clone, Copy, Debug)]
struct Moment {
    points: usize,
    /// How long the batch's first point has waited.
    waited: Duration,
    in_flight: usize,
    /// A write has just ended: the slot this batch was waiting for.
    write_ended: bool,
}

/// The batching policy, kept pure so that it can be read (and tested) in one place.
fn write_now(c: &BatchConfig, m: Moment) -> bool {
    if m.points == 0 || m.in_flight >= c.max_in_flight.max(1) {
        return false;
    }
    if m.points >= c.max_points || m.waited >= c.linger {
        return true;
    }
    // Waiting only helps while InfluxDB is busy anyway: an idle one gets the batch at once, and
    // each write that ends takes along what gathered meanwhile (group commit).
    !c.fixed_linger && (m.in_flight == 0 || m.write_ended)
}

/// The writer task's state: the batch being gathered and the writes in flight.
struct Batcher<T, S> {
    sink: S,
    config: BatchConfig,
    metrics: WriterMetrics,
    on_written: OnWritten<T>,
    writes: JoinSet<()>,
    body: String,
    /// Where each point's line ends in `body`.
    ends: Vec<usize>,
    ctxs: Vec<T>,
    /// When the first point of the current batch arrived.
    since: Option<Instant>,
}

async fn run<T: Send + 'static, S: Sink>(
    sink: S,
    config: BatchConfig,
    metrics: WriterMetrics,
    on_written: OnWritten<T>,
    mut rx: mpsc::Receiver<Msg<T>>,
) {
    let mut b = Batcher {
        sink,
        config,
        metrics,
        on_written,
        writes: JoinSet::new(),
        body: String::new(),
        ends: Vec::new(),
        ctxs: Vec::new(),
        since: None,
    };
    let mut write_ended = false;
    loop {
        if write_now(&b.config, b.moment(write_ended)) {
            b.start_write();
        }
        write_ended = false;
        let slot_free = b.writes.len() < b.config.max_in_flight.max(1);
        // A timer only when it can change the decision: with a free slot and a batch waiting.
        let linger_at = b
            .since
            .filter(|_| slot_free)
            .and_then(|s| s.checked_add(b.config.linger));
        let room = b.ctxs.len() < b.config.max_points;
        tokio::select! {
            // Ended writes first: their answers are due, and they free the slots.
            biased;
            Some(r) = b.writes.join_next(), if !b.writes.is_empty() => {
                b.ended(r);
                write_ended = true;
            }
            msg = rx.recv(), if room => match msg {
                Some(msg) => {
                    b.take(msg).await;
                    // Gather what is queued already, so a burst goes out as one batch.
                    while b.ctxs.len() < b.config.max_points {
                        let Ok(msg) = rx.try_recv() else { break };
                        b.take(msg).await;
                    }
                }
                None => {
                    b.drain().await;
                    return;
                }
            },
            () = sleep_until(linger_at), if linger_at.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at.into()).await;
    }
}

impl<T: Send + 'static, S: Sink> Batcher<T, S> {
    fn moment(&self, write_ended: bool) -> Moment {
        Moment {
            points: self.ctxs.len(),
            waited: self.since.map(|s| s.elapsed()).unwrap_or_default(),
            in_flight: self.writes.len(),
            write_ended,
        }
    }

    async fn take(&mut self, msg: Msg<T>) {
        match msg {
            Msg::Point(line, ctx) => {
                if self.ctxs.is_empty() {
                    self.since = Some(Instant::now());
                }
                self.body.push_str(&line);
                self.ends.push(self.body.len());
                self.ctxs.push(ctx);
            }
            Msg::Flush(done) => {
                self.drain().await;
                let _ = done.send(());
            }
        }
    }

    /// Writes everything gathered, as slots allow, and waits until no write is in flight.
    async fn drain(&mut self) {
        while !self.ctxs.is_empty() {
            if self.writes.len() < self.config.max_in_flight.max(1) {
                self.start_write();
            } else if let Some(r) = self.writes.join_next().await {
                self.ended(r);
            }
        }
        while let Some(r) = self.writes.join_next().await {
            self.ended(r);
        }
    }

    fn ended(&mut self, r: Result<(), tokio::task::JoinError>) {
        if let Err(e) = r {
            // Its readings get no answer; their clients retransmit and the dedup cache says
            // "pending" until the exchange expires. Only a bug gets here.
            tracing::error!(error = %e, "batch write task failed");
        }
        self.metrics.writes_in_flight.set(self.writes.len() as i64);
    }

    /// Writes the gathered batch in the background, so the next one can gather meanwhile.
    fn start_write(&mut self) {
        let part = Part {
            start: 0,
            ends: std::mem::take(&mut self.ends),
            ctxs: std::mem::take(&mut self.ctxs),
        };
        let body = Bytes::from(std::mem::take(&mut self.body));
        self.since = None;
        let job = Job {
            sink: self.sink.clone(),
            policy: self.config.retry.clone(),
            metrics: self.metrics.clone(),
            on_written: self.on_written.clone(),
        };
        self.writes.spawn(async move {
            let n = part.ctxs.len() as u64;
            let started = Instant::now();
            job.write(body, part).await;
            job.metrics
                .write_seconds
                .observe(started.elapsed().as_secs_f64());
            job.metrics.batch_points.observe(n as f64);
        });
        self.metrics.writes_in_flight.set(self.writes.len() as i64);
    }
}

/// Points of a batch that share a fate until a write tells them apart: their lines lie between
/// `start` and the last of `ends` in the batch's body.
struct Part<T> {
    start: usize,
    ends: Vec<usize>,
    ctxs: Vec<T>,
}

impl<T> Part<T> {
    fn len(&self) -> usize {
        self.ctxs.len()
    }

    /// The two halves, in order.
    fn halve(mut self) -> (Part<T>, Part<T>) {
        let mid = self.len() / 2;
        let ends = self.ends.split_off(mid);
        let ctxs = self.ctxs.split_off(mid);
        let start = self.ends.last().copied().unwrap_or(self.start);
        (self, Part { start, ends, ctxs })
    }
}

/// What one batch's write needs.
struct Job<T, S> {
    sink: S,
    policy: RetryPolicy,
    metrics: WriterMetrics,
    on_written: OnWritten<T>,
}

impl<T, S: Sink> Job<T, S> {
    /// Writes `whole`, and the parts of it InfluxDB stored in part again, until every point's
    /// fate is known; hands each point to `on_written` once.
    async fn write(&self, body: Bytes, whole: Part<T>) {
        // Depth first, first half first: points are answered in the order they came.
        let mut parts = vec![whole];
        let mut rewrite = false;
        while let Some(part) = parts.pop() {
            if part.ctxs.is_empty() {
                continue;
            }
            if rewrite {
                self.metrics.partial_rewrites.inc();
            }
            rewrite = true;
            let n = part.len() as u64;
            let end = part.ends.last().copied().unwrap_or(part.start);
            let result = self
                .sink
                .write_batch(body.slice(part.start..end), &self.policy)
                .await;
            let verdict = Verdict::of(result.as_ref().map(|_| ()), n);
            let e = match &result {
                Ok(()) => {
                    self.metrics.points_written.inc_by(n);
                    (self.on_written)(part.ctxs, Written::Stored);
                    continue;
                }
                Err(e) => e,
            };
            self.metrics
                .write_errors
                .get_or_create(&ErrorLabels { kind: e.kind() })
                .inc();
            match verdict {
                Verdict::Partial { .. } | Verdict::TooLarge if n > 1 => {
                    tracing::debug!(error = %e, points = n, "stored in part; writing halves again");
                    let (first, second) = part.halve();
                    parts.push(second);
                    parts.push(first);
                }
                Verdict::Unavailable => {
                    self.metrics.points_failed.inc_by(n);
                    tracing::warn!(error = %e, points = n, "batch write failed");
                    (self.on_written)(part.ctxs, Written::Unavailable(e));
                }
                _ => {
                    self.metrics.points_refused.inc_by(n);
                    // A client's doing, counted: at warn a flood would flood the log too.
                    tracing::debug!(error = %e, points = n, "InfluxDB refused points for good");
                    (self.on_written)(part.ctxs, Written::Refused(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(linger_ms: u64, fixed_linger: bool) -> BatchConfig {
        BatchConfig {
            max_points: 100,
            linger: Duration::from_millis(linger_ms),
            fixed_linger,
            max_in_flight: 2,
            ..BatchConfig::default()
        }
    }

    fn at(points: usize, waited_ms: u64, in_flight: usize, write_ended: bool) -> Moment {
        Moment {
            points,
            waited: Duration::from_millis(waited_ms),
            in_flight,
            write_ended,
        }
    }

    #[test]
    fn an_idle_influxdb_gets_a_point_at_once_whatever_the_linger() {
        let c = config(3_600_000, false);
        assert!(write_now(&c, at(1, 0, 0, false)));
    }

    #[test]
    fn points_gather_while_a_write_is_in_flight_until_it_ends() {
        let c = config(3_600_000, false);
        assert!(!write_now(&c, at(40, 5, 1, false)));
        assert!(write_now(&c, at(40, 5, 1, true)));
    }

    #[test]
    fn no_more_writes_than_slots_even_when_full_or_late() {
        let c = config(10, false);
        assert!(!write_now(&c, at(100, 1_000, 2, true)));
        assert!(!write_now(&c, at(0, 0, 0, true)), "nothing to write");
    }

    #[test]
    fn a_full_batch_or_the_linger_sends_while_another_write_is_in_flight() {
        let c = config(10, false);
        assert!(write_now(&c, at(100, 0, 1, false)));
        assert!(write_now(&c, at(3, 10, 1, false)));
        assert!(write_now(&config(0, false), at(1, 0, 1, false)), "linger 0");
    }

    /// Stores every line but those containing "bad", which it drops as InfluxDB drops points in
    /// a partial write; counts its writes.
    #[derive(Clone, Default)]
    struct Picky(Arc<std::sync::atomic::AtomicUsize>);

    impl Sink for Picky {
        async fn write_batch(&self, body: Bytes, _: &RetryPolicy) -> Result<(), WriteError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let text = String::from_utf8_lossy(&body);
            let dropped = text.lines().filter(|l| l.contains("bad")).count();
            if dropped == 0 {
                return Ok(());
            }
            Err(WriteError::Rejected {
                status: reqwest::StatusCode::BAD_REQUEST,
                body: format!("partial write: bad dropped={dropped}"),
            })
        }
    }

    #[tokio::test]
    async fn a_batch_stored_in_part_hands_each_point_back_once_with_its_fate() {
        let sink = Picky::default();
        let fates = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = fates.clone();
        let on_written: OnWritten<usize> =
            Arc::new(move |ctxs: Vec<usize>, written: Written<'_>| {
                let mut seen = seen.lock().unwrap();
                seen.extend(ctxs.into_iter().map(|i| (i, written.is_stored())));
            });
        let config = BatchConfig {
            linger: Duration::from_secs(3600),
            fixed_linger: true,
            ..config(0, true)
        };
        let writer = BatchWriter::spawn(sink.clone(), config, WriterMetrics::default(), on_written);
        for i in 0..16 {
            let line = if i == 5 { "bad 1\n" } else { "good 1\n" };
            writer.submit(line.into(), i).await.unwrap();
        }
        writer.flush().await.unwrap();
        let mut fates = fates.lock().unwrap().clone();
        fates.sort_unstable();
        let want: Vec<(usize, bool)> = (0..16).map(|i| (i, i != 5)).collect();
        assert_eq!(fates, want);
        // The whole batch, then two halves at each of four levels.
        assert_eq!(sink.0.load(std::sync::atomic::Ordering::Relaxed), 1 + 2 * 4);
    }

    #[test]
    fn a_fixed_linger_waits_even_for_an_idle_influxdb() {
        let c = config(20, true);
        assert!(!write_now(&c, at(1, 19, 0, false)));
        assert!(!write_now(&c, at(1, 19, 1, true)));
        assert!(write_now(&c, at(1, 20, 0, false)));
        assert!(write_now(&c, at(100, 0, 0, false)));
    }
}
