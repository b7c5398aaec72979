//! Delivery of one reading: exchanges are repeated until the server confirms the reading is
//! stored, it refuses it for good (4.xx), or the deadline passes. Nothing is dropped silently:
//! every outcome is counted and every give-up is logged.

use std::time::{Duration, Instant};

use coap_lite::{RequestType, ResponseType};

use crate::client::{Client, ExchangeError, Request, Response};
use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("refused by the server ({code:?}): {message}")]
    Rejected { code: ResponseType, message: String },
    #[error("not stored before the deadline (last: {last})")]
    GaveUp { last: String },
}

/// Max-Age when a 5.03 carries none (RFC 7252 §5.10.5 default is 60 s).
const DEFAULT_MAX_AGE: u32 = 60;

/// A reading as the server takes it. `taken_at_ms` goes out as `ts=`: every re-send of the same
/// reading carries the same time, so the server stores it on the same point, once.
pub fn reading(
    path: &'static [&'static str],
    value: f64,
    mut query: Vec<String>,
    taken_at_ms: i64,
) -> Request {
    query.push(format!("ts={taken_at_ms}"));
    Request {
        method: RequestType::Post,
        path,
        query,
        payload: format!("{value:.1}").into_bytes(),
    }
}

/// A clock for one sensor: Unix milliseconds, strictly increasing, so that two readings of one
/// series never share a timestamp (InfluxDB would keep only one of them).
#[derive(Default)]
pub struct SensorClock {
    last_ms: i64,
}

impl SensorClock {
    pub fn now(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.last_ms = now.max(self.last_ms + 1);
        self.last_ms
    }
}

pub const TEMPERATURE: &[&str] = &["sensors", "dht", "temperature"];
pub const HUMIDITY: &[&str] = &["sensors", "dht", "humidity"];

/// What comes after one exchange of a reading.
#[derive(Debug)]
pub enum Next {
    Stored,
    /// Send the same reading again after this pause.
    RetryAfter(Duration),
    Refused(DeliveryError),
}

/// Judges the outcome of one exchange of a reading and counts it in `stats`. Shared by
/// [`deliver`] and the load generator, which drives its exchanges without a task each.
pub fn next_step(outcome: Result<Response, ExchangeError>, stats: &Stats) -> Next {
    match outcome {
        Ok(r) if is_success(r.code) => {
            stats.acked.inc();
            Next::Stored
        }
        Ok(r) if r.code == ResponseType::ServiceUnavailable => {
            stats.unavailable.inc();
            Next::RetryAfter(Duration::from_secs(u64::from(
                r.max_age.unwrap_or(DEFAULT_MAX_AGE),
            )))
        }
        Ok(r) if is_client_error(r.code) => {
            stats.rejected.inc();
            stats.failed.inc();
            Next::Refused(DeliveryError::Rejected {
                code: r.code,
                message: String::from_utf8_lossy(&r.payload).into_owned(),
            })
        }
        Ok(r) => {
            tracing::debug!(code = ?r.code, "server error, retrying");
            Next::RetryAfter(Duration::from_secs(1))
        }
        Err(ExchangeError::Timeout(_)) => {
            stats.timeouts.inc();
            Next::RetryAfter(Duration::ZERO)
        }
        Err(e) => {
            tracing::debug!(error = %e, "exchange failed, retrying");
            Next::RetryAfter(Duration::from_secs(1))
        }
    }
}

/// A retry after `pause` that would end past `deadline` is given up on (and counted).
pub fn give_up(deadline: Option<Instant>, pause: Duration, stats: &Stats) -> Option<DeliveryError> {
    deadline
        .is_some_and(|d| Instant::now() + pause >= d)
        .then(|| {
            stats.failed.inc();
            DeliveryError::GaveUp {
                last: format!("waiting {pause:?} to retry"),
            }
        })
}

/// Sends `request` until stored; returns the time from first transmission to confirmation.
pub async fn deliver(
    client: &Client,
    request: Request,
    stats: &Stats,
    deadline: Option<Instant>,
) -> Result<Duration, DeliveryError> {
    let started = Instant::now();
    loop {
        match next_step(client.request(request.clone()).await, stats) {
            Next::Stored => return Ok(started.elapsed()),
            Next::Refused(e) => return Err(e),
            Next::RetryAfter(pause) => {
                if let Some(e) = give_up(deadline, pause, stats) {
                    return Err(e);
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

fn is_success(code: ResponseType) -> bool {
    matches!(
        code,
        ResponseType::Created
            | ResponseType::Deleted
            | ResponseType::Valid
            | ResponseType::Changed
            | ResponseType::Content
    )
}

fn is_client_error(code: ResponseType) -> bool {
    code.is_error()
        && !matches!(
            code,
            ResponseType::InternalServerError
                | ResponseType::NotImplemented
                | ResponseType::BadGateway
                | ResponseType::ServiceUnavailable
                | ResponseType::GatewayTimeout
                | ResponseType::ProxyingNotSupported
                | ResponseType::HopLimitReached
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sensor_clock_never_repeats_itself() {
        let mut clock = SensorClock::default();
        let times: Vec<i64> = (0..10_000).map(|_| clock.now()).collect();
        assert!(times.windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn readings_carry_their_time() {
        let r = reading(TEMPERATURE, 21.0, vec!["place=a".into()], 1234);
        assert_eq!(r.query, vec!["place=a".to_string(), "ts=1234".to_string()]);
        assert_eq!(r.payload, b"21.0");
    }
}
