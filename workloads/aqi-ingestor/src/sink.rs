//! Where batches of lines go: InfluxDB, or (dry run) any byte stream such as stdout.

use iot_common::{InfluxClient, RetryPolicy, WriteError};
use tokio::io::{AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Influx(#[from] WriteError),
    #[error("cannot write the dry-run output: {0}")]
    Output(#[from] std::io::Error),
}

impl SinkError {
    /// A stable, low-cardinality name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkError::Influx(e) => e.kind(),
            SinkError::Output(_) => "output",
        }
    }
}

/// Bytes handed to a dry run's output at a time.
const OUTPUT_PIECE: usize = 256 * 1024;

pub enum Sink {
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
    pub fn stdout() -> Self {
        Sink::Output(Box::new(tokio::io::stdout()))
    }

    /// Writes the batch in `body` (newline-terminated lines) and leaves `body` empty. InfluxDB
    /// writes are retried with back-off as the policy allows.
    pub async fn write(&mut self, body: &mut String) -> Result<(), SinkError> {
        if body.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Influx { client, retry } => {
                // The body moves into the request (no copy); the next batch grows a new buffer.
                let batch = std::mem::take(body);
                client.write_with_retry(batch, retry).await?;
            }
            Sink::Output(out) => {
                // In pieces: tokio's stdout copies each write into a buffer of its own (for its
                // blocking thread), which would otherwise grow to the size of a whole batch.
                for piece in body.as_bytes().chunks(OUTPUT_PIECE) {
                    out.write_all(piece).await?;
                }
                out.flush().await?;
                body.clear();
            }
        }
        Ok(())
    }
}
