//! A per-source rate limit: a token bucket for each source address, in a table of fixed size.
//!
//! Addresses are hashed (with a per-process seed) into the table's buckets, so its memory does
//! not grow with the number of sources, forged or not; two sources that share a bucket share
//! its rate. Only the receive loop uses it, so it needs no lock.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

use hashbrown::DefaultHashBuilder;

/// Buckets in the table: enough that sources rarely share one, small enough to stay in cache.
const BUCKETS: usize = 1 << 14;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Tokens left, in thousandths of a request.
    milli_tokens: u64,
    /// When it was last refilled, in milliseconds since the limiter's epoch.
    at_ms: u64,
}

pub(crate) struct RateLimit {
    hasher: DefaultHashBuilder,
    buckets: Box<[Bucket]>,
    /// Requests per second per source.
    rate: u64,
    /// Requests a source may send at once after a pause.
    burst: u64,
    epoch: Instant,
}

impl RateLimit {
    /// `None` when `rate` is zero: no limit.
    pub(crate) fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| RateLimit {
            hasher: DefaultHashBuilder::default(),
            buckets: vec![Bucket::default(); BUCKETS].into_boxed_slice(),
            rate: u64::from(rate),
            burst: u64::from(burst.max(1)),
            epoch: Instant::now(),
        })
    }

    /// Whether a request from `source` may be served now; takes its token if so.
    pub(crate) fn allow(&mut self, source: IpAddr) -> bool {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        self.allow_at(source, now_ms)
    }

    fn allow_at(&mut self, source: IpAddr, now_ms: u64) -> bool {
        let index = (self.hasher.hash_one(source) as usize) % BUCKETS;
        let full = self.burst * 1000;
        let bucket = &mut self.buckets[index];
        // A bucket never seen, or idle long enough, is full.
        let refill = now_ms
            .saturating_sub(bucket.at_ms)
            .saturating_mul(self.rate);
        bucket.milli_tokens = if bucket.at_ms == 0 {
            full
        } else {
            bucket.milli_tokens.saturating_add(refill).min(full)
        };
        bucket.at_ms = now_ms.max(1);
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut limit = RateLimit::new(100, 10).expect("a limit");
        let allowed = (0..50).filter(|_| limit.allow_at(ip(1), 1000)).count();
        assert_eq!(allowed, 10, "the burst");
        // 100 per second: one more every 10 ms.
        assert!(limit.allow_at(ip(1), 1010));
        assert!(!limit.allow_at(ip(1), 1010));
        let allowed = (0..50).filter(|_| limit.allow_at(ip(1), 1110)).count();
        assert_eq!(allowed, 10, "refilled up to the burst, not beyond");
    }

    #[test]
    fn one_source_at_its_limit_leaves_others_theirs() {
        let mut limit = RateLimit::new(100, 10).expect("a limit");
        for _ in 0..1000 {
            limit.allow_at(ip(1), 5000);
        }
        let others = (2..=100).filter(|&n| limit.allow_at(ip(n), 5000)).count();
        // Those that happen to share the flood's bucket share its limit: rarely one of 99.
        assert!(others >= 97, "{others}");
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(RateLimit::new(0, 10).is_none());
    }
}
