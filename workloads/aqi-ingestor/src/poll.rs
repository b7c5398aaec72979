//! One poll: fetch the snapshot (unless unchanged), stream it through parser, watermarks and
//! transform into batches, write them, and only then advance the watermarks.
//!
//! The rules that keep it correct when things go wrong:
//! - The body is cut into windows that are parsed and prepared in order, or with
//!   `--threads` above 1 by worker threads side by side (`windows`); their results are
//!   joined and admitted in body order, so the outcome is the same with any number of threads.
//! - Batches are written as the body streams in, so memory does not grow with the snapshot.
//! - A batch that InfluxDB does not take (after the retry policy: 5xx, 429, no answer,
//!   credentials refused) ends the poll: the watermarks forget what the poll admitted, so the
//!   next poll offers the same readings again. Batches that did get through are simply written
//!   again then; InfluxDB keeps one point per series and time, so nothing is duplicated.
//! - A batch too large for InfluxDB (413) is written in halves (see [`crate::sink`]).
//! - The watermarks advance only for readings InfluxDB stored: a sensor with a reading it
//!   refused keeps its watermark (see [`crate::watermark`]).
//! - A bad body (invalid JSON, trailing junk, cut off) or a broken download ends the parsing;
//!   the records before the fault are real readings and are written, and once they are, the
//!   watermarks advance for them. The snapshot's validators are not remembered, so the next poll
//!   fetches it again. One bad body never stops the loop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// Public: a poll's report holds them.
pub use crate::ingest::PollStats;
pub use crate::snapshot::BodyError;

use crate::fetch::{Fetch, FetchError, Fetcher};
use crate::ingest::{Ingest, Preparation, Prepared};
use crate::means::Reading;
use crate::region::Region;
use crate::sink::{Batch, Sink, SinkError};
use crate::snapshot::Item;
use crate::timestamp::EpochSeconds;
use crate::transform::Feed;
use crate::watermark::Watermarks;
use crate::windows::{self, Cutter, Joiner, Parsed, WINDOW, Window};

/// How a poll ended. Stable names: they are metric labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PollOutcome {
    /// New readings were written.
    Written,
    /// The snapshot was processed and held nothing new.
    NoNew,
    /// The snapshot held no records at all (`[]`).
    Empty,
    /// Unchanged since the last poll (304, or the same validators): not downloaded.
    #[default]
    NotModified,
    /// The source could not be reached, answered an error, or the download broke off.
    FetchError,
    /// The body is not a valid snapshot (records before the fault were still written).
    BadBody,
    /// InfluxDB did not take a batch; the poll's readings are offered again next time.
    WriteError,
    /// There were new readings, and InfluxDB refused every one of them for good (see
    /// `flush`): a schema or limit problem for a person to look at.
    Rejected,
}

impl PollOutcome {
    pub(crate) const ALL: [PollOutcome; 8] = [
        PollOutcome::Written,
        PollOutcome::NoNew,
        PollOutcome::Empty,
        PollOutcome::NotModified,
        PollOutcome::FetchError,
        PollOutcome::BadBody,
        PollOutcome::WriteError,
        PollOutcome::Rejected,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PollOutcome::Written => "written",
            PollOutcome::NoNew => "no_new",
            PollOutcome::Empty => "empty",
            PollOutcome::NotModified => "not_modified",
            PollOutcome::FetchError => "fetch_error",
            PollOutcome::BadBody => "bad_body",
            PollOutcome::WriteError => "write_error",
            PollOutcome::Rejected => "rejected",
        }
    }

    /// The ingestor is up to date with the source after this poll.
    pub(crate) fn is_success(self) -> bool {
        matches!(
            self,
            PollOutcome::Written
                | PollOutcome::NoNew
                | PollOutcome::Empty
                | PollOutcome::NotModified
        )
    }
}

/// Why a poll did not store all of its snapshot.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The snapshot could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The snapshot is not one (the records before the fault were still written).
    #[error("bad snapshot body: {0}")]
    Body(#[from] BodyError),
    /// A batch was not stored.
    #[error("writing a batch failed: {0}")]
    Write(#[from] SinkError),
    /// A parsing thread ended without its result.
    #[error("a parsing thread was stopped: {0}")]
    Worker(String),
}

/// Everything a poll did, for metrics and logs.
#[derive(Debug, Default)]
pub struct PollReport {
    pub(crate) feed: Feed,
    /// How the poll ended.
    pub outcome: PollOutcome,
    /// The records of the snapshot, by what became of them.
    pub stats: PollStats,
    /// Lines the sink accepted.
    pub written: u64,
    /// Lines InfluxDB refused for good (see `flush`).
    pub rejected: u64,
    /// Body bytes received (after decompression).
    pub bytes: u64,
    pub(crate) elapsed: Duration,
    /// What went wrong, if anything did.
    pub error: Option<PollError>,
    /// The new readings stored by this poll that a 24-hour window takes (readings feed).
    pub(crate) readings: Vec<Reading>,
}

/// A window being parsed on a worker, or (one thread) waiting to be parsed in order.
enum Job {
    Running(tokio::task::JoinHandle<Parsed<Prepared>>),
    InOrder(Window),
}

/// How snapshots are polled; the default suits the 24-hour means feed.
#[derive(Clone, Debug)]
pub struct PollConfig {
    /// Lines per write request (a batch is written once it has at least this many).
    pub(crate) batch_lines: usize,
    /// How far ahead of the local clock a record's time may be.
    pub(crate) max_clock_skew: Duration,
    /// Threads that parse and transform windows of a snapshot at once; 1 parses in order.
    pub(crate) threads: usize,
    /// What the source holds: 24-hour means or 5-minute readings.
    pub(crate) feed: Feed,
    /// Records outside it are skipped.
    pub(crate) region: Option<Arc<Region>>,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            batch_lines: 5000,
            max_clock_skew: Duration::from_secs(3600),
            threads: 1,
            feed: Feed::Daily,
            region: None,
        }
    }
}

/// The ingestor's state between polls.
#[derive(Debug)]
pub struct Poller {
    /// Where the snapshots come from.
    pub fetcher: Fetcher,
    /// The newest reading stored of each sensor: only newer ones are written.
    pub watermarks: Watermarks,
    /// Where the readings go.
    pub sink: Sink,
    /// How the snapshots are read.
    pub config: PollConfig,
}

impl Poller {
    /// Fetches the snapshot, unless it is the one processed last, and writes every reading in
    /// it that is newer than its sensor's watermark.
    pub async fn poll(&mut self) -> PollReport {
        let started = Instant::now();
        let mut report = PollReport {
            feed: self.config.feed,
            ..PollReport::default()
        };
        self.run(&mut report).await;
        report.elapsed = started.elapsed();
        report
    }

    async fn run(&mut self, report: &mut PollReport) {
        // A poll cancelled half-way (shutdown) may have left admissions behind.
        self.watermarks.abort();
        let mut download = match self.fetcher.start().await {
            Ok(Fetch::NotModified) => {
                report.outcome = PollOutcome::NotModified;
                return;
            }
            Ok(Fetch::Body(d)) => d,
            Err(e) => {
                report.outcome = PollOutcome::FetchError;
                report.error = Some(e.into());
                return;
            }
        };

        let how = Preparation {
            latest: latest_accepted(self.config.max_clock_skew),
            feed: self.config.feed,
            region: self.config.region.clone(),
        };
        let prepare = |item: Item<'_>, block: &mut Prepared| block.push(item, &how);
        let threads = self.config.threads.max(1);
        // One window more than workers, so they have the next one while this thread joins.
        let max_in_flight = if threads == 1 { 1 } else { threads + 1 };
        let mut cutter = Cutter::new(WINDOW);
        let mut joiner = Joiner::new();
        let mut in_flight: VecDeque<Job> = VecDeque::new();
        let mut eof = false;
        let mut ingest = Ingest::new(&mut self.watermarks);
        let mut batch = Batch::default();
        let threshold = self.config.batch_lines.max(1) as u64;

        let body: Result<(), PollError> = loop {
            // Keep the workers busy: hand out windows while there is room, reading as needed.
            if in_flight.len() < max_in_flight {
                if let Some(window) = cutter.next(eof) {
                    in_flight.push_back(if threads == 1 {
                        Job::InOrder(window)
                    } else {
                        let how = how.clone();
                        Job::Running(tokio::task::spawn_blocking(move || {
                            windows::parse(window, &|item: Item<'_>, block: &mut Prepared| {
                                block.push(item, &how)
                            })
                        }))
                    });
                    continue;
                }
                if !eof {
                    match download.read_into(cutter.input()).await {
                        Ok(more) => eof = !more,
                        Err(e) => break Err(e.into()),
                    }
                    continue;
                }
            }
            // Then take the oldest window's result, in body order.
            let Some(job) = in_flight.pop_front() else {
                break joiner.finish().map_err(PollError::from);
            };
            let (block, result) = match job {
                Job::InOrder(window) => joiner.parse_in_order(window, &prepare),
                Job::Running(handle) => match handle.await {
                    Ok(parsed) => joiner.accept(parsed, &prepare),
                    // A panic in a worker is a bug: let it surface as it would have inline.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => break Err(PollError::Worker(e.to_string())),
                },
            };
            ingest.admit(&block, &mut batch);
            if let Err(e) = result {
                break Err(e.into());
            }
            if batch.lines() as u64 >= threshold {
                let flushed = flush(&mut self.sink, &mut batch, ingest.watermarks(), report).await;
                if let Err(e) = flushed {
                    report.stats = ingest.stats;
                    report.bytes = download.bytes();
                    self.watermarks.abort();
                    report.outcome = PollOutcome::WriteError;
                    report.error = Some(e.into());
                    return;
                }
            }
        };
        if joiner.reparsed() > 0 {
            tracing::debug!(
                windows = joiner.reparsed(),
                "windows parsed again after a wrong guess of a record start"
            );
        }
        let write = flush(&mut self.sink, &mut batch, ingest.watermarks(), report).await;
        report.stats = ingest.stats;
        let readings = ingest.readings;
        report.bytes = download.bytes();
        if let Err(e) = write {
            self.watermarks.abort();
            report.outcome = PollOutcome::WriteError;
            report.error = Some(e.into());
            return;
        }
        // Everything admitted is written now: the watermarks advance past what InfluxDB stored,
        // whatever became of the rest of the body.
        self.watermarks.commit();
        report.readings = readings;

        match body {
            Ok(()) => {
                self.fetcher.processed(download.validators());
                report.outcome = if report.stats.total_records() == 0 {
                    PollOutcome::Empty
                } else if report.written > 0 {
                    PollOutcome::Written
                } else if report.rejected > 0 {
                    PollOutcome::Rejected
                } else {
                    PollOutcome::NoNew
                };
            }
            Err(e) => {
                report.outcome = match e {
                    PollError::Fetch(_) => PollOutcome::FetchError,
                    _ => PollOutcome::BadBody,
                };
                report.error = Some(e);
            }
        }
    }
}

/// Writes `batch` and tells `marks` which of its readings InfluxDB stored. Lines InfluxDB
/// refuses for good (a field type conflict, a cardinality limit: "partial write"; a single line
/// still too large) do not end the poll: sending them again now cannot change its mind, and
/// stopping here would keep every later batch of every later poll from being written. They are
/// counted as rejected, and their sensors' watermarks stay where they were. Any other failure
/// (InfluxDB away or overloaded after the retries, credentials refused) ends the poll so that it
/// is all offered again.
pub(crate) async fn flush(
    sink: &mut Sink,
    batch: &mut Batch,
    marks: &mut Watermarks,
    report: &mut PollReport,
) -> Result<(), SinkError> {
    let lines = batch.lines();
    let written = sink.write(batch).await;
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            batch.clear();
            return Err(e);
        }
    };
    // The refused ranges are in line order.
    let mut refused = written.refused.iter().peekable();
    for (line, &sensor) in batch.sensors().iter().enumerate() {
        while refused.next_if(|r| r.end <= line).is_some() {}
        if !refused.peek().is_some_and(|r| r.contains(&line)) {
            marks.settled(sensor);
        }
    }
    batch.clear();
    let rejected = written.refused_lines();
    if let Some(e) = &written.last_refusal {
        tracing::error!(
            error = %e,
            rejected,
            "InfluxDB refused points for good; they are offered again only when a poll sees them again"
        );
    }
    report.written += (lines - rejected) as u64;
    report.rejected += rejected as u64;
    Ok(())
}

/// Now plus the tolerated clock skew, as a record time.
fn latest_accepted(skew: Duration) -> EpochSeconds {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(skew)
        .as_secs();
    EpochSeconds::try_from(now).unwrap_or(EpochSeconds::MAX)
}
