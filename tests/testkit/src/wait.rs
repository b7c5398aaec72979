//! Waiting for something to become true, the one way every test here does it: poll a check
//! until it passes or a generous deadline passes, and say what was seen last.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long tests wait for something to converge: `IOT_TEST_TIMEOUT_SECS`, default 120 s
/// (generous, because servers, test binaries and the compiler share 2 cores in CI).
pub fn default_timeout() -> Duration {
    let secs = std::env::var("IOT_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// A wait that ran out of time.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {secs} s waiting for {what}; last seen: {last}")]
pub struct TimedOut {
    pub what: String,
    pub secs: u64,
    pub last: String,
}

// `unwrap()` and `expect()` print Debug; make that the readable message.
impl std::fmt::Debug for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Polls `check` every 100 ms until it returns `Ok`, for at most `timeout`. `Err(text)` means
/// "not yet" and says what was seen, which becomes part of the [`TimedOut`] error.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    until_every(what, timeout, Duration::from_millis(100), check).await
}

/// [`until`] with another polling interval (e.g. longer for checks that load an API server).
pub async fn until_every<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if start.elapsed() >= timeout {
            return Err(TimedOut {
                what: what.to_string(),
                secs: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_passing_value_and_times_out_with_the_last_seen() {
        let mut n = 0;
        let got = until("n to reach 3", Duration::from_secs(60), || {
            n += 1;
            let now = n;
            async move {
                if now >= 3 {
                    Ok(now)
                } else {
                    Err(format!("n = {now}"))
                }
            }
        })
        .await;
        assert_eq!(got, Ok(3));

        let never = until("never", Duration::ZERO, || async {
            Err::<(), _>("no".into())
        })
        .await;
        let err = never.expect_err("times out");
        assert_eq!(err.last, "no");
        assert!(format!("{err:?}").contains("waiting for never; last seen: no"));
    }
}
