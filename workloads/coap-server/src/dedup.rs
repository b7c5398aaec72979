//! Message deduplication (RFC 7252 §4.5): a confirmable request retransmitted by a client whose
//! ACK was lost must get the same answer again, and must not be stored twice.
//!
//! An exchange is keyed by (peer, message ID) and remembered with a fingerprint of the whole
//! datagram, so a client that reuses a message ID too early for a *different* request is not
//! mistaken for a retransmission (that would lose its reading). Only outcomes that depend on
//! state are kept (stored, unavailable, pending); answers that follow from the request alone
//! (4.xx) are simply computed again. Entries are 24 bytes, so the default capacity costs a few
//! MB; they expire after EXCHANGE_LIFETIME or, when the cache is full, oldest first.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashbrown::DefaultHashBuilder;
use hashbrown::hash_table::{Entry, HashTable};

/// RFC 7252 §4.8.2.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Being written; a retransmission is ignored, the answer follows when the write ends.
    Pending,
    Stored,
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate(Outcome),
}

/// Identifies one exchange: a hash of (peer, message ID) and a hash of the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeId {
    key: u64,
    fingerprint: u64,
}

struct Slot {
    /// The exchange's key, which is already a hash: the table uses it as it is.
    key: u64,
    fingerprint: u64,
    outcome: Outcome,
    /// Seconds since the cache's epoch, for expiry.
    at: u32,
}

pub struct DedupCache {
    /// foldhash, seeded per process: a few nanoseconds per datagram where SipHash took tens.
    hasher: DefaultHashBuilder,
    slots: HashTable<Slot>,
    order: VecDeque<(u64, u32)>,
    capacity: usize,
    lifetime: Duration,
    epoch: Instant,
}

impl DedupCache {
    pub fn new(capacity: usize, lifetime: Duration) -> Self {
        DedupCache {
            hasher: DefaultHashBuilder::default(),
            slots: HashTable::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            lifetime,
            epoch: Instant::now(),
        }
    }

    pub fn id(&self, peer: SocketAddr, message_id: u16, datagram: &[u8]) -> ExchangeId {
        ExchangeId {
            key: self.hasher.hash_one((peer, message_id)),
            fingerprint: self.hasher.hash_one(datagram),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Looks the exchange up; a new one is recorded as pending.
    pub fn check(&mut self, id: ExchangeId) -> Seen {
        let now = self.now();
        self.expire(now);
        let slot = Slot {
            key: id.key,
            fingerprint: id.fingerprint,
            outcome: Outcome::Pending,
            at: now,
        };
        match self.slots.entry(id.key, |s| s.key == id.key, |s| s.key) {
            Entry::Occupied(e) if e.get().fingerprint == id.fingerprint => {
                Seen::Duplicate(e.get().outcome)
            }
            Entry::Occupied(mut e) => {
                // Same peer and message ID but another datagram: a new request.
                *e.get_mut() = slot;
                self.order.push_back((id.key, now));
                Seen::New
            }
            Entry::Vacant(e) => {
                e.insert(slot);
                self.order.push_back((id.key, now));
                Seen::New
            }
        }
    }

    /// Records how a pending exchange ended.
    pub fn complete(&mut self, id: ExchangeId, outcome: Outcome) {
        if let Some(slot) = self.slots.find_mut(id.key, |s| s.key == id.key)
            && slot.fingerprint == id.fingerprint
        {
            slot.outcome = outcome;
        }
    }

    fn expire(&mut self, now: u32) {
        let lifetime = self.lifetime.as_secs() as u32;
        while let Some(&(key, at)) = self.order.front() {
            let full = self.slots.len() >= self.capacity;
            if !full && now.saturating_sub(at) < lifetime {
                break;
            }
            self.order.pop_front();
            // The key may have been reused since; only drop the slot this queue entry made.
            // At capacity even a pending slot goes (its answer is still sent when the write
            // ends); a retransmission arriving after that would be stored again, so size the
            // cache for the request rate times the retransmission window.
            if let Ok(e) = self.slots.find_entry(key, |s| s.key == key)
                && e.get().at == at
            {
                e.remove();
            }
        }
        // Queue entries whose slots were overwritten are skipped lazily above; bound them too.
        while self.order.len() > self.capacity.saturating_mul(2) {
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_retransmission_is_recognised_and_gets_the_recorded_outcome() {
        let mut c = DedupCache::new(100, EXCHANGE_LIFETIME);
        let id = c.id(peer(1), 7, b"request");
        assert_eq!(c.check(id), Seen::New);
        assert_eq!(c.check(id), Seen::Duplicate(Outcome::Pending));
        c.complete(id, Outcome::Stored);
        assert_eq!(c.check(id), Seen::Duplicate(Outcome::Stored));
    }

    #[test]
    fn the_same_message_id_from_another_peer_or_with_other_content_is_new() {
        let mut c = DedupCache::new(100, EXCHANGE_LIFETIME);
        assert_eq!(c.check(c.id(peer(1), 7, b"a")), Seen::New);
        assert_eq!(c.check(c.id(peer(2), 7, b"a")), Seen::New);
        assert_eq!(c.check(c.id(peer(1), 7, b"b")), Seen::New);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let mut c = DedupCache::new(10, EXCHANGE_LIFETIME);
        for mid in 0..1000u16 {
            let id = c.id(peer(1), mid, &mid.to_be_bytes());
            c.check(id);
            c.complete(id, Outcome::Stored);
        }
        assert!(c.len() <= 10, "{}", c.len());
        assert!(c.order.len() <= 20);
    }

    #[test]
    fn entries_expire_after_the_exchange_lifetime() {
        let mut c = DedupCache::new(10, Duration::ZERO);
        let id = c.id(peer(1), 1, b"x");
        c.check(id);
        c.complete(id, Outcome::Stored);
        assert_eq!(c.check(id), Seen::New);
    }
}
