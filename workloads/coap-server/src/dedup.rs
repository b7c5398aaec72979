//! Message deduplication (RFC 7252 §4.5): a confirmable request retransmitted by a client whose
//! ACK was lost must get the same answer again, and must not be stored twice.
//!
//! An exchange is keyed by (peer, message ID) and remembered with a fingerprint of the whole
//! datagram, so a client that reuses a message ID too early for a *different* request is not
//! mistaken for a retransmission (that would lose its reading). Only outcomes that depend on
//! state are kept (stored, refused, unavailable, pending); answers that follow from the request
//! alone (4.xx) are simply computed again. Entries expire after EXCHANGE_LIFETIME.
//!
//! A flood cannot flush the others: each source address has a budget of entries, and a source
//! at its budget makes room by forgetting its own oldest exchange, not anyone else's. Only when
//! the whole cache is full (many sources at once) does the oldest entry of all go.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashbrown::DefaultHashBuilder;
use hashbrown::hash_table::{Entry, HashTable};

/// RFC 7252 §4.8.2.
pub(crate) const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Being written; a retransmission is ignored, the answer follows when the write ends.
    Pending,
    Stored,
    /// InfluxDB refused it for good.
    Refused,
    Unavailable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    New,
    Duplicate(Outcome),
}

/// Identifies one exchange: a hash of (peer, message ID), a hash of the datagram, and a hash of
/// the peer's address (without the port: one host is one source, whatever its ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ExchangeId {
    key: u64,
    fingerprint: u64,
    source: u64,
}

struct Slot {
    /// The exchange's key, which is already a hash: the table uses it as it is.
    key: u64,
    fingerprint: u64,
    source: u64,
    /// Which insertion made this slot, so that queue entries of earlier ones are told apart.
    seq: u64,
    outcome: Outcome,
}

/// A source's live entries, oldest first (with stale ones, skipped when met).
struct Source {
    hash: u64,
    live: usize,
    order: VecDeque<(u64, u64)>,
}

pub(crate) struct DedupCache {
    /// foldhash, seeded per process: a few nanoseconds per datagram where SipHash took tens.
    hasher: DefaultHashBuilder,
    slots: HashTable<Slot>,
    /// Every entry as (key, seq, seconds since the epoch), oldest first, with stale ones
    /// skipped when met.
    order: VecDeque<(u64, u64, u32)>,
    sources: HashTable<Source>,
    capacity: usize,
    per_source: usize,
    lifetime: Duration,
    epoch: Instant,
    next_seq: u64,
}

impl DedupCache {
    /// Remembers up to `capacity` exchanges, at most `per_source` of them from one source.
    pub(crate) fn new(capacity: usize, per_source: usize, lifetime: Duration) -> Self {
        let capacity = capacity.max(1);
        DedupCache {
            hasher: DefaultHashBuilder::default(),
            slots: HashTable::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::new(),
            sources: HashTable::new(),
            capacity,
            per_source: per_source.clamp(1, capacity),
            lifetime,
            epoch: Instant::now(),
            next_seq: 0,
        }
    }

    pub(crate) fn id(&self, peer: SocketAddr, message_id: u16, datagram: &[u8]) -> ExchangeId {
        ExchangeId {
            key: self.hasher.hash_one((peer, message_id)),
            fingerprint: self.hasher.hash_one(datagram),
            source: self.hasher.hash_one(peer.ip()),
        }
    }

    /// An exchange of a registered device: keyed by its name instead of its address, and its
    /// budget is the device's own.
    pub(crate) fn device_id(&self, device: &str, message_id: u16, datagram: &[u8]) -> ExchangeId {
        // The tag keeps a device's keys apart from any address's.
        ExchangeId {
            key: self.hasher.hash_one(("device", device, message_id)),
            fingerprint: self.hasher.hash_one(datagram),
            source: self.hasher.hash_one(("device", device)),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Looks the exchange up; a new one is recorded as pending.
    pub(crate) fn check(&mut self, id: ExchangeId) -> Seen {
        let now = self.now();
        self.expire(now);
        self.next_seq += 1;
        let seq = self.next_seq;
        let slot = Slot {
            key: id.key,
            fingerprint: id.fingerprint,
            source: id.source,
            seq,
            outcome: Outcome::Pending,
        };
        match self.slots.find_mut(id.key, |s| s.key == id.key) {
            Some(old) if old.fingerprint == id.fingerprint => return Seen::Duplicate(old.outcome),
            Some(old) if old.source == id.source => {
                // Same peer and message ID but another datagram: a new request in its place.
                *old = slot;
                self.order.push_back((id.key, seq, now));
                let (slots, per_source) = (&self.slots, self.per_source);
                let source = source_entry(&mut self.sources, id.source);
                source.order.push_back((id.key, seq));
                if source.order.len() > per_source.saturating_mul(2) {
                    // The entries of the requests it replaced, gone at once (amortised).
                    source.order.retain(|&(k, q)| is_live(slots, k, q));
                }
                return Seen::New;
            }
            Some(_) => {
                // Two keys' hashes met: the older exchange is forgotten.
                self.remove(id.key, None);
            }
            None => {}
        }
        let (slots, per_source) = (&mut self.slots, self.per_source);
        let source = source_entry(&mut self.sources, id.source);
        if source.live >= per_source {
            // At its budget: the source forgets its own oldest exchange, no one else's.
            while let Some((key, seq)) = source.order.pop_front() {
                if let Ok(e) = slots.find_entry(key, |s| s.key == key)
                    && e.get().seq == seq
                {
                    e.remove();
                    source.live -= 1;
                    break;
                }
            }
        }
        // Counted before it is in the table, so that the source's entry outlives what follows.
        source.live += 1;
        source.order.push_back((id.key, seq));
        // Only when many sources fill the cache together: the oldest entry of all goes.
        while self.slots.len() >= self.capacity {
            let Some((key, seq, _)) = self.order.pop_front() else {
                break;
            };
            self.remove(key, Some(seq));
        }
        self.slots.insert_unique(id.key, slot, |s| s.key);
        self.order.push_back((id.key, seq, now));
        Seen::New
    }

    /// Records how a pending exchange ended.
    pub(crate) fn complete(&mut self, id: ExchangeId, outcome: Outcome) {
        if let Some(slot) = self.slots.find_mut(id.key, |s| s.key == id.key)
            && slot.fingerprint == id.fingerprint
        {
            slot.outcome = outcome;
        }
    }

    /// Removes the slot of `key` (only the one insertion `seq` made, when given) and counts it
    /// off its source. Whether there was one.
    fn remove(&mut self, key: u64, seq: Option<u64>) -> bool {
        let Ok(e) = self.slots.find_entry(key, |s| s.key == key) else {
            return false;
        };
        if seq.is_some_and(|seq| e.get().seq != seq) {
            return false;
        }
        let (slot, _) = e.remove();
        let slots = &self.slots;
        if let Ok(mut e) = self
            .sources
            .find_entry(slot.source, |s| s.hash == slot.source)
        {
            let source = e.get_mut();
            source.live = source.live.saturating_sub(1);
            if source.live == 0 {
                e.remove();
            } else {
                // Its queue is oldest first too: what went is usually at its front.
                while source
                    .order
                    .front()
                    .is_some_and(|&(k, q)| !is_live(slots, k, q))
                {
                    source.order.pop_front();
                }
                if source.order.len() > self.per_source.saturating_mul(2) {
                    source.order.retain(|&(k, q)| is_live(slots, k, q));
                }
            }
        }
        true
    }

    fn expire(&mut self, now: u32) {
        let lifetime = self.lifetime.as_secs() as u32;
        while let Some(&(key, seq, at)) = self.order.front() {
            if now.saturating_sub(at) < lifetime {
                break;
            }
            self.order.pop_front();
            self.remove(key, Some(seq));
        }
        // Entries of slots that went another way (a source's budget, a new request in their
        // place) are skipped when met; when they pile up, they go at once. Amortised: the
        // queue then holds at most the live entries, and it takes as many again to come back.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let slots = &self.slots;
            self.order.retain(|&(k, q, _)| is_live(slots, k, q));
        }
    }
}

/// The source's entry, made if it has none.
fn source_entry(sources: &mut HashTable<Source>, hash: u64) -> &mut Source {
    match sources.entry(hash, |s| s.hash == hash, |s| s.hash) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e
            .insert(Source {
                hash,
                live: 0,
                order: VecDeque::new(),
            })
            .into_mut(),
    }
}

/// Whether a queue entry (key, seq) is the slot's current insertion.
fn is_live(slots: &HashTable<Slot>, key: u64, seq: u64) -> bool {
    slots
        .find(key, |s| s.key == key)
        .is_some_and(|s| s.seq == seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_retransmission_is_recognised_and_gets_the_recorded_outcome() {
        let mut c = DedupCache::new(100, 100, EXCHANGE_LIFETIME);
        let id = c.id(peer(1), 7, b"request");
        assert_eq!(c.check(id), Seen::New);
        assert_eq!(c.check(id), Seen::Duplicate(Outcome::Pending));
        c.complete(id, Outcome::Stored);
        assert_eq!(c.check(id), Seen::Duplicate(Outcome::Stored));
    }

    #[test]
    fn the_same_message_id_from_another_peer_or_with_other_content_is_new() {
        let mut c = DedupCache::new(100, 100, EXCHANGE_LIFETIME);
        assert_eq!(c.check(c.id(peer(1), 7, b"a")), Seen::New);
        assert_eq!(c.check(c.id(peer(2), 7, b"a")), Seen::New);
        assert_eq!(c.check(c.id(peer(1), 7, b"b")), Seen::New);
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let mut c = DedupCache::new(10, 10, EXCHANGE_LIFETIME);
        for mid in 0..1000u16 {
            let id = c.id(peer(1), mid, &mid.to_be_bytes());
            c.check(id);
            c.complete(id, Outcome::Stored);
        }
        assert!(c.len() <= 10, "{}", c.len());
        assert!(c.order.len() <= 21);
    }

    fn host(a: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, a], port))
    }

    #[test]
    fn a_flood_from_one_source_forgets_its_own_exchanges_not_the_others() {
        let mut c = DedupCache::new(1000, 100, EXCHANGE_LIFETIME);
        let others: Vec<ExchangeId> = (1..=5)
            .flat_map(|a| (0..50u16).map(move |mid| (a, mid)))
            .map(|(a, mid)| c.id(host(a, 5683), mid, &mid.to_be_bytes()))
            .collect();
        for &id in &others {
            assert_eq!(c.check(id), Seen::New);
            c.complete(id, Outcome::Stored);
        }
        // Many ports of one host are one source.
        for n in 0..100_000u32 {
            let id = c.id(
                host(66, n as u16 | 1024),
                (n >> 16) as u16,
                &n.to_be_bytes(),
            );
            assert_eq!(c.check(id), Seen::New);
        }
        for &id in &others {
            assert_eq!(c.check(id), Seen::Duplicate(Outcome::Stored));
        }
        assert!(c.len() <= 250 + 100, "{}", c.len());
        assert!(c.order.len() <= 2000);
        assert!(c.sources.len() <= 6);
    }

    #[test]
    fn a_source_that_reuses_one_message_id_keeps_its_queues_bounded() {
        let mut c = DedupCache::new(1000, 100, EXCHANGE_LIFETIME);
        for n in 0..100_000u32 {
            assert_eq!(c.check(c.id(host(1, 1), 7, &n.to_be_bytes())), Seen::New);
        }
        assert_eq!(c.len(), 1);
        assert!(c.order.len() <= 2001, "{}", c.order.len());
        let queued: usize = c.sources.iter().map(|s| s.order.len()).sum();
        assert!(queued <= 201, "{queued}");
    }

    #[test]
    fn when_many_sources_fill_the_cache_the_oldest_entry_goes() {
        let mut c = DedupCache::new(10, 5, EXCHANGE_LIFETIME);
        let ids: Vec<ExchangeId> = (0..20u8).map(|a| c.id(host(a, 1), 1, b"x")).collect();
        for &id in &ids {
            assert_eq!(c.check(id), Seen::New);
        }
        assert_eq!(c.len(), 10);
        assert_eq!(c.check(ids[19]), Seen::Duplicate(Outcome::Pending));
        assert_eq!(c.sources.len(), 10, "sources without entries are forgotten");
    }

    #[test]
    fn entries_expire_after_the_exchange_lifetime() {
        let mut c = DedupCache::new(10, 10, Duration::ZERO);
        let id = c.id(peer(1), 1, b"x");
        c.check(id);
        c.complete(id, Outcome::Stored);
        assert_eq!(c.check(id), Seen::New);
    }
}
