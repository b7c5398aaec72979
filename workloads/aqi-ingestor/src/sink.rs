//! Where batches of lines go: InfluxDB, or (dry run) any byte stream such as stdout.
//!
//! What InfluxDB's answer to a write means for its points is read by the one classification of
//! [`iot_common::verdict`]:
//! - stored: every line is;
//! - too large (413), or stored in part ("partial write ... dropped=N"): the batch is written
//!   again in halves, and those halves again, until each line is stored or refused; a single line
//!   that is still too large is refused;
//! - refused for good: its lines are reported back as refused;
//! - unavailable (no answer, 5xx, 429, no database, credentials refused): the write is retried
//!   with back-off as the policy allows, except for refused credentials, which a pause does not
//!   heal; if it still fails, the error ends the write and nothing of it counts as stored.
//!
//! Writing a stored line again is harmless: the lines are the same, timestamps included, and
//! InfluxDB keeps one point per series and time.

use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use iot_common::verdict::{self, Verdict};
use iot_common::{InfluxClient, RetryPolicy, WriteError};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// InfluxDB did not take it.
    #[error(transparent)]
    Influx(#[from] WriteError),
    /// The dry run's output could not be written.
    #[error("cannot write the dry-run output: {0}")]
    Output(#[from] std::io::Error),
}

/// Lines waiting to be written, with the sensor of each: the watermarks advance only for the
/// readings InfluxDB stored.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    body: String,
    /// Where each line ends in `body`.
    ends: Vec<usize>,
    sensors: Vec<u64>,
}

impl Batch {
    /// Appends one newline-terminated line of `sensor`.
    pub(crate) fn push(&mut self, line: &str, sensor: u64) {
        self.body.push_str(line);
        self.end_line(sensor);
    }

    /// The body, for appending one line in place; [`Batch::end_line`] then marks its end.
    pub(crate) fn body_mut(&mut self) -> &mut String {
        &mut self.body
    }

    /// The line appended through [`Batch::body_mut`] is complete.
    pub(crate) fn end_line(&mut self, sensor: u64) {
        self.ends.push(self.body.len());
        self.sensors.push(sensor);
    }

    pub(crate) fn lines(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The sensor of each line, in order.
    pub(crate) fn sensors(&self) -> &[u64] {
        &self.sensors
    }

    #[cfg(test)]
    pub(crate) fn body(&self) -> &str {
        &self.body
    }

    pub(crate) fn clear(&mut self) {
        self.body.clear();
        self.ends.clear();
        self.sensors.clear();
    }
}

/// What became of a batch that did not end in an error: every line is stored but those in
/// `refused` (ranges of line numbers, in order).
#[derive(Debug, Default)]
pub(crate) struct Written {
    pub(crate) refused: Vec<Range<usize>>,
    /// InfluxDB's answer to the last refused part, for the log.
    pub(crate) last_refusal: Option<WriteError>,
}

impl Written {
    /// Lines refused for good.
    pub(crate) fn refused_lines(&self) -> usize {
        self.refused.iter().map(ExactSizeIterator::len).sum()
    }
}

/// Bytes handed to a dry run's output at a time.
const OUTPUT_PIECE: usize = 256 * 1024;

/// Where the readings go.
pub enum Sink {
    /// InfluxDB, through `client`, each write retried as `retry` says.
    #[allow(missing_docs)] // the variant says what they are
    Influx {
        client: InfluxClient,
        retry: RetryPolicy,
    },
    /// `--dry-run`: the exact line protocol that would be written.
    Output(Box<dyn AsyncWrite + Send + Unpin>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Influx { client, .. } => write!(f, "Sink::Influx({})", client.url()),
            Sink::Output(_) => f.write_str("Sink::Output"),
        }
    }
}

impl Sink {
    pub(crate) fn stdout() -> Self {
        Sink::Output(Box::new(tokio::io::stdout()))
    }

    /// Writes `batch`; says which lines InfluxDB refused for good. An error means InfluxDB did
    /// not take (all of) it and the rest was not tried: none of it counts as stored. The batch's
    /// sensors are left for the caller to read; its body may be gone, so the caller clears it.
    pub(crate) async fn write(&mut self, batch: &mut Batch) -> Result<Written, SinkError> {
        if batch.is_empty() {
            return Ok(Written::default());
        }
        let written = match self {
            Sink::Influx { client, retry } => {
                // The body moves into the request (no copy), and its halves are slices of it;
                // the next batch grows a new buffer.
                let body = Bytes::from(std::mem::take(&mut batch.body));
                write_in_parts(client, retry, body, &batch.ends).await?
            }
            Sink::Output(out) => {
                // In pieces: tokio's stdout copies each write into a buffer of its own (for its
                // blocking thread), which would otherwise grow to the size of a whole batch.
                write_output(out, batch.body.as_bytes()).await?;
                Written::default()
            }
        };
        Ok(written)
    }
}

async fn write_output(
    out: &mut (dyn AsyncWrite + Send + Unpin),
    body: &[u8],
) -> Result<(), std::io::Error> {
    for piece in body.chunks(OUTPUT_PIECE) {
        out.write_all(piece).await?;
    }
    out.flush().await
}

/// Writes the lines of `body` that end at `ends`, in halves as InfluxDB's answers ask, until the
/// fate of each line is known.
async fn write_in_parts(
    client: &InfluxClient,
    policy: &RetryPolicy,
    body: Bytes,
    ends: &[usize],
) -> Result<Written, WriteError> {
    let mut written = Written::default();
    // Depth first, first half first: the lines are written in order.
    let mut parts: Vec<Range<usize>> = Vec::new();
    parts.push(0..ends.len());
    while let Some(lines) = parts.pop() {
        if lines.is_empty() {
            continue;
        }
        let Some(&end) = ends.get(lines.end - 1) else {
            continue;
        };
        let start = match lines.start {
            0 => 0,
            first => ends.get(first - 1).copied().unwrap_or(0),
        };
        let n = lines.len() as u64;
        let result = write_retrying(client, policy, body.slice(start..end)).await;
        let verdict = Verdict::of(result.as_ref().map(|_| ()), n);
        let Err(e) = result else { continue };
        match verdict {
            Verdict::TooLarge | Verdict::Partial { .. } if n > 1 => {
                tracing::debug!(error = %e, lines = n, "writing the batch again in halves");
                let mid = lines.start + lines.len() / 2;
                parts.push(mid..lines.end);
                parts.push(lines.start..mid);
            }
            Verdict::Unavailable => return Err(e),
            Verdict::Stored | Verdict::TooLarge | Verdict::Partial { .. } | Verdict::Refused => {
                tracing::debug!(error = %e, lines = n, "InfluxDB refused lines for good");
                written.refused.push(lines);
                written.last_refusal = Some(e);
            }
        }
    }
    Ok(written)
}

/// One write, tried again after a pause while the failure is one a pause can heal
/// ([`verdict::retry_soon`]: 5xx and 429 among them), as the policy allows.
async fn write_retrying(
    client: &InfluxClient,
    policy: &RetryPolicy,
    body: Bytes,
) -> Result<(), WriteError> {
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        let last = attempt >= policy.max_attempts || started.elapsed() >= policy.deadline;
        match client.write(body.clone()).await {
            Err(e) if !last && verdict::retry_soon(&e) => {
                let pause = policy.backoff(attempt);
                tracing::debug!(error = %e, attempt, ?pause, "write failed, retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
