//! Bounded cardinality for anonymous senders: every new `place` or `sensor` value is a new
//! series in InfluxDB, and its `max-values-per-tag` limit, once reached, refuses new values to
//! everyone. So anonymous (plaintext) senders may bring at most so many new values, per server
//! and per source address; beyond that a reading is refused and nothing is stored.
//!
//! The values already in the database count as known (read at start-up), as do those this
//! server admitted. The state is bounded: the known values by what InfluxDB holds plus the
//! server's allowance, the per-source counts by the number of sources that brought a value,
//! which is at most that allowance.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet};

/// Which limit a reading ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its source brought its share of new values already.
    Source(u32),
    /// The server took its share from all sources together.
    Server(usize),
}

impl Refusal {
    /// A metrics label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Source(_) => "new_tags_source",
            Refusal::Server(_) => "new_tags_server",
        }
    }

    /// Why, for the client.
    pub(crate) fn message(self) -> String {
        match self {
            Refusal::Source(n) => format!(
                "no new place or sensor names from this address: it brought {n} already, the most an anonymous sender may; use a known one"
            ),
            Refusal::Server(n) => format!(
                "no new place or sensor names: anonymous senders brought {n} already, the most this server takes; use a known one"
            ),
        }
    }
}

pub(crate) struct NewTags {
    /// Values known, as hashes of (tag key, value): no string kept or compared. Two values
    /// whose 64-bit hashes meet would count as one, which only ever lets one value through.
    known: HashSet<u64>,
    /// Seeded per process, so that no one can pick values whose hashes meet.
    hasher: DefaultHashBuilder,
    per_server: usize,
    per_source: u32,
    admitted: usize,
    by_source: HashMap<IpAddr, u32>,
    /// Values read from the database are only taken up to this many, so that a database far
    /// larger than expected cannot grow the server without bound.
    max_known: usize,
}

/// Tag keys, hashed with their values.
const PLACE: u8 = b'p';
const SENSOR: u8 = b's';

impl NewTags {
    pub(crate) fn new(per_server: usize, per_source: u32, max_known: usize) -> Self {
        NewTags {
            known: HashSet::new(),
            hasher: DefaultHashBuilder::default(),
            per_server,
            per_source,
            admitted: 0,
            by_source: HashMap::new(),
            max_known,
        }
    }

    /// Values that exist already (in the database, or the default place).
    pub(crate) fn learn_place(&mut self, value: &str) {
        self.learn(PLACE, value);
    }

    pub(crate) fn learn_sensor(&mut self, value: &str) {
        self.learn(SENSOR, value);
    }

    fn learn(&mut self, key: u8, value: &str) {
        if self.known.len() < self.max_known {
            let hash = self.hash(key, value);
            self.known.insert(hash);
        }
    }

    fn hash(&self, key: u8, value: &str) -> u64 {
        self.hasher.hash_one((key, value))
    }

    /// Admits a reading's tags from `source`, counting the values it brings that are new.
    pub(crate) fn admit(
        &mut self,
        source: IpAddr,
        place: &str,
        sensor: Option<&str>,
    ) -> Result<(), Refusal> {
        let place = self.hash(PLACE, place);
        let sensor = sensor.map(|s| self.hash(SENSOR, s));
        let new_place = !self.known.contains(&place);
        let new_sensor = sensor.is_some_and(|s| !self.known.contains(&s));
        let new = u32::from(new_place) + u32::from(new_sensor);
        if new == 0 {
            return Ok(());
        }
        let brought = self.by_source.get(&source).copied().unwrap_or(0);
        if brought + new > self.per_source {
            return Err(Refusal::Source(brought));
        }
        if self.admitted + new as usize > self.per_server {
            return Err(Refusal::Server(self.admitted));
        }
        self.admitted += new as usize;
        *self.by_source.entry(source).or_default() += new;
        if new_place {
            self.known.insert(place);
        }
        if let Some(s) = sensor.filter(|_| new_sensor) {
            self.known.insert(s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_source_brings_at_most_its_share_of_new_values() {
        let mut t = NewTags::new(100, 3, 1000);
        t.learn_place("room1");
        assert_eq!(t.admit(ip(1), "room1", None), Ok(()), "known");
        assert_eq!(t.admit(ip(1), "a", Some("s1")), Ok(()), "two new");
        assert_eq!(t.admit(ip(1), "b", Some("s1")), Ok(()), "one new");
        assert_eq!(t.admit(ip(1), "c", None), Err(Refusal::Source(3)));
        assert_eq!(t.admit(ip(1), "a", Some("s1")), Ok(()), "still known");
        // Another source may use the values it brought, and bring its own.
        assert_eq!(t.admit(ip(2), "b", Some("s1")), Ok(()));
        assert_eq!(t.admit(ip(2), "c", None), Ok(()));
    }

    #[test]
    fn the_server_takes_at_most_its_share_from_all_sources() {
        let mut t = NewTags::new(10, 3, 1000);
        let admitted = (0..50u8)
            .filter(|&n| t.admit(ip(n), &format!("p{n}"), None).is_ok())
            .count();
        assert_eq!(admitted, 10);
        assert_eq!(t.admit(ip(200), "p99", None), Err(Refusal::Server(10)));
        assert!(t.by_source.len() <= 10);
        assert!(t.known.len() <= 10);
    }

    #[test]
    fn values_read_from_the_database_are_not_new() {
        let mut t = NewTags::new(10, 1, 1000);
        t.learn_sensor("dht-1");
        t.learn_place("lab");
        assert_eq!(t.admit(ip(1), "lab", Some("dht-1")), Ok(()));
        assert_eq!(
            t.admit(ip(1), "dht-1", None),
            Ok(()),
            "a sensor's name is a new place"
        );
        assert_eq!(
            t.admit(ip(1), "lab", Some("dht-2")),
            Err(Refusal::Source(1))
        );
    }
}
