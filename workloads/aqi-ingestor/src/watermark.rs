//! "Only new readings": the newest stored reading per sensor, and the bookkeeping of one poll.
//!
//! A reading (sensor, time) is new when its time is later than the newest reading of its sensor
//! that was stored *before this poll*. Comparing against the pre-poll watermark (not a running
//! maximum) is what lets a snapshot that holds several readings of one sensor, in any order,
//! write every one of them; remembering what this poll has already admitted is what keeps an
//! exact repeat (the v1 endpoints repeat pushes) from being written twice.
//!
//! A watermark advances only past readings InfluxDB stored: each reading admitted is pending
//! until `Watermarks::settled` says it was stored (or had nothing to store). At the end of a
//! poll, `Watermarks::commit` advances the watermark of each sensor whose every admitted reading
//! was settled to the newest of them; a sensor with a reading that InfluxDB refused, or that was
//! never written, keeps its watermark, so the next poll that sees the reading offers it again.
//! After a failed write, `Watermarks::abort` forgets the poll, so the next one tries the same
//! readings again (InfluxDB stores a point with the same series and time once, so the retry
//! cannot duplicate what did get through).
//!
//! Memory: one small hash map entry per sensor, plus one set entry per reading of sensors that
//! appear more than once in one snapshot, for the length of the poll.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};

use crate::timestamp::EpochSeconds;

/// `0` means "none" in both fields: [`crate::timestamp::parse`] never returns it.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Newest reading stored (committed) for this sensor.
    stored: EpochSeconds,
    /// Newest reading admitted in the current poll.
    this_poll: EpochSeconds,
    /// Readings admitted in the current poll that are not known to be stored yet.
    pending: u32,
}

/// The verdict on one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Later than anything stored for the sensor, and the first time this poll sees it.
    New,
    /// Not later than the newest reading stored for the sensor before this poll.
    NotNewer,
    /// The same sensor and time was already admitted in this poll.
    Duplicate,
}

/// foldhash rather than SipHash: a fraction of the cost per lookup (this is the one sequential
/// step of a poll), still seeded at random per process, so colliding ids cannot be prepared.
type Hasher = foldhash::fast::RandomState;

/// The newest reading stored of each sensor, and the readings admitted by the poll under way.
#[derive(Debug, Default)]
pub struct Watermarks {
    sensors: HashMap<u64, Entry, Hasher>,
    /// Every admitted (sensor, time) of the sensors admitted more than once in this poll.
    repeats: HashSet<(u64, EpochSeconds), Hasher>,
}

impl Watermarks {
    /// No sensor known yet: every reading is new.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that InfluxDB already holds a reading of `sensor` at `time` (start-up).
    pub(crate) fn seed(&mut self, sensor: u64, time: EpochSeconds) {
        let e = self.sensors.entry(sensor).or_default();
        e.stored = e.stored.max(time);
    }

    /// The newest committed reading of a sensor.
    pub fn stored(&self, sensor: u64) -> Option<EpochSeconds> {
        self.sensors
            .get(&sensor)
            .map(|e| e.stored)
            .filter(|&t| t != 0)
    }

    /// Sensors with a committed watermark or a reading admitted in this poll.
    pub(crate) fn len(&self) -> usize {
        self.sensors.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    /// Decides whether a reading is new, and if it is, remembers it as admitted in this poll.
    pub(crate) fn admit(&mut self, sensor: u64, time: EpochSeconds) -> Admission {
        let e = match self.sensors.entry(sensor) {
            MapEntry::Vacant(v) => {
                v.insert(Entry {
                    stored: 0,
                    this_poll: time,
                    pending: 1,
                });
                return Admission::New;
            }
            MapEntry::Occupied(o) => o.into_mut(),
        };
        if e.stored != 0 && time <= e.stored {
            return Admission::NotNewer;
        }
        match e.this_poll {
            0 => {
                e.this_poll = time;
                e.pending += 1;
                Admission::New
            }
            seen if seen == time => Admission::Duplicate,
            seen => {
                // A second distinct reading of this sensor in this poll: from now on every one
                // of its readings goes into `repeats` (the first one, too, which until now was
                // only in `this_poll`).
                self.repeats.insert((sensor, seen));
                if self.repeats.insert((sensor, time)) {
                    e.this_poll = seen.max(time);
                    e.pending += 1;
                    Admission::New
                } else {
                    Admission::Duplicate
                }
            }
        }
    }

    /// One reading of `sensor` admitted in this poll is stored, or has nothing to store.
    pub(crate) fn settled(&mut self, sensor: u64) {
        if let Some(e) = self.sensors.get_mut(&sensor) {
            e.pending = e.pending.saturating_sub(1);
        }
    }

    /// The poll is over: each sensor whose admitted readings are all settled advances to the
    /// newest of them; the others keep the watermark they had, so that a reading InfluxDB did
    /// not store is not taken for stored.
    pub(crate) fn commit(&mut self) {
        self.sensors.retain(|_, e| {
            if e.pending == 0 {
                e.stored = e.stored.max(e.this_poll);
            }
            e.this_poll = 0;
            e.pending = 0;
            e.stored != 0
        });
        self.end_poll();
    }

    /// The poll failed to write: forget what it admitted.
    pub(crate) fn abort(&mut self) {
        self.sensors.retain(|_, e| {
            e.this_poll = 0;
            e.pending = 0;
            e.stored != 0
        });
        self.end_poll();
    }

    /// As if every reading admitted in this poll was stored, then `Watermarks::commit`.
    #[cfg(test)]
    pub(crate) fn commit_all(&mut self) {
        for e in self.sensors.values_mut() {
            e.pending = 0;
        }
        self.commit();
    }

    fn end_poll(&mut self) {
        // Give the memory of a large snapshot back rather than keep it for the process's life.
        if self.repeats.capacity() > 4096 {
            self.repeats = HashSet::default();
        } else {
            self.repeats.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Admission::*;

    const T: EpochSeconds = 1_555_424_572;

    #[test]
    fn first_reading_of_a_sensor_is_new() {
        let mut w = Watermarks::new();
        assert_eq!(w.admit(1, T), New);
        assert_eq!(w.stored(1), None, "not stored before commit");
        w.commit_all();
        assert_eq!(w.stored(1), Some(T));
    }

    #[test]
    fn the_same_snapshot_twice_admits_nothing_the_second_time() {
        let mut w = Watermarks::new();
        let snapshot = [(1, T), (2, T + 5), (1, T + 60)];
        for &(s, t) in &snapshot {
            assert_eq!(w.admit(s, t), New);
        }
        w.commit_all();
        for &(s, t) in &snapshot {
            assert_eq!(w.admit(s, t), NotNewer, "{s} {t}");
        }
    }

    #[test]
    fn several_readings_of_one_sensor_in_any_order_are_all_new() {
        let mut w = Watermarks::new();
        w.seed(7, T);
        for t in [T + 30, T + 10, T + 20, T - 10, T] {
            let want = if t > T { New } else { NotNewer };
            assert_eq!(w.admit(7, t), want, "{t}");
        }
        w.commit_all();
        assert_eq!(w.stored(7), Some(T + 30));
    }

    #[test]
    fn exact_repeats_within_a_poll_are_duplicates() {
        let mut w = Watermarks::new();
        assert_eq!(w.admit(3, T), New);
        assert_eq!(w.admit(3, T), Duplicate);
        assert_eq!(w.admit(3, T + 1), New);
        assert_eq!(w.admit(3, T), Duplicate);
        assert_eq!(w.admit(3, T + 1), Duplicate);
        assert_eq!(w.admit(3, T - 1), New);
        assert_eq!(w.admit(3, T - 1), Duplicate);
    }

    #[test]
    fn a_failed_poll_is_forgotten() {
        let mut w = Watermarks::new();
        w.seed(1, T);
        assert_eq!(w.admit(1, T + 1), New);
        assert_eq!(w.admit(2, T + 1), New);
        w.abort();
        assert_eq!(w.stored(1), Some(T));
        assert_eq!(w.stored(2), None);
        assert_eq!(w.len(), 1, "sensors never stored are dropped");
        assert_eq!(w.admit(1, T + 1), New, "retried by the next poll");
        assert_eq!(w.admit(2, T + 1), New);
    }

    #[test]
    fn seeding_keeps_the_newest() {
        let mut w = Watermarks::new();
        w.seed(1, T);
        w.seed(1, T - 100);
        assert_eq!(w.stored(1), Some(T));
    }

    #[test]
    fn repeats_are_per_poll() {
        let mut w = Watermarks::new();
        assert_eq!(w.admit(1, T), New);
        assert_eq!(w.admit(1, T + 1), New);
        w.commit_all();
        assert_eq!(w.admit(1, T + 2), New);
        assert_eq!(w.admit(1, T + 3), New);
        assert_eq!(w.admit(1, T + 2), Duplicate);
        w.commit_all();
        assert_eq!(w.stored(1), Some(T + 3));
    }

    #[test]
    fn a_watermark_does_not_advance_past_a_refused_or_unavailable_batch() {
        let mut w = Watermarks::new();
        w.seed(1, T);
        w.seed(2, T);
        // Sensor 1: its older reading is stored, its newer one refused (or never written).
        assert_eq!(w.admit(1, T + 10), New);
        assert_eq!(w.admit(1, T + 20), New);
        // Sensor 2: its one reading refused. Sensor 3: new, and its reading stored.
        assert_eq!(w.admit(2, T + 10), New);
        assert_eq!(w.admit(3, T + 10), New);
        w.settled(1);
        w.settled(3);
        w.commit();
        assert_eq!(w.stored(1), Some(T), "one of its readings is not stored");
        assert_eq!(w.stored(2), Some(T));
        assert_eq!(w.stored(3), Some(T + 10));
        assert_eq!(w.admit(1, T + 20), New, "offered again");
        assert_eq!(
            w.admit(1, T + 10),
            New,
            "offered again, as InfluxDB may not hold it"
        );
        assert_eq!(w.admit(2, T + 10), New);
        assert_eq!(w.admit(3, T + 10), NotNewer);

        // A batch that InfluxDB did not take ends the poll: nothing advances, even what the
        // poll had stored before.
        w.settled(1);
        w.abort();
        assert_eq!(w.stored(1), Some(T));
        assert_eq!(w.stored(2), Some(T));
        assert_eq!(w.admit(2, T + 10), New);

        // Once every reading is stored, the watermark advances to the newest.
        assert_eq!(w.admit(1, T + 20), New);
        assert_eq!(w.admit(1, T + 10), New);
        w.settled(1);
        w.settled(1);
        w.settled(2);
        w.commit();
        assert_eq!(w.stored(1), Some(T + 20));
        assert_eq!(w.stored(2), Some(T + 10));
    }

    #[test]
    fn a_new_sensor_whose_reading_is_not_stored_is_not_kept() {
        let mut w = Watermarks::new();
        assert_eq!(w.admit(5, T), New);
        w.commit();
        assert_eq!(w.stored(5), None);
        assert!(w.is_empty());
        assert_eq!(w.admit(5, T), New);
    }
}
