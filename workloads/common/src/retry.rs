//! Exponential back-off with full jitter, bounded by attempts and by a deadline.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// No new attempt starts after this much time since the first.
    pub deadline: Duration,
}

impl RetryPolicy {
    /// For a caller that is waiting on the answer (a CoAP client): give up quickly so it can be
    /// told to come back later instead of retransmitting into a stalled exchange.
    pub fn interactive() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            deadline: Duration::from_secs(1),
        }
    }

    /// For background work that can wait (the AQI poll): keep trying for a while.
    pub fn patient() -> Self {
        RetryPolicy {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
        }
    }

    /// The pause before attempt `attempt + 1` (attempt counts from 1): a random point in
    /// `[0, min(max, initial * 2^(attempt-1))]`, so that many clients do not retry in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        cap.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(10),
        };
        for _ in 0..100 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(400));
            assert!(p.backoff(30) <= Duration::from_secs(1));
        }
    }
}
