//! One parsed item → a verdict, and a line when the record is new: the per-record pipeline
//! between the parser and the batch buffer, with its counts.
//!
//! It runs in two steps so that the expensive one can run on several threads: [`Prepared`]
//! parses the timestamp, validates the values and formats the line of every record of a window
//! (pure, per record, on a worker thread); [`Ingest::admit`] then asks the watermarks, in
//! snapshot order, which records are new and keeps their lines (cheap, and sequential by
//! nature).

use std::sync::Arc;

use crate::means::{self, Reading};
use crate::record::Record;
use crate::region::{self, Region};
use crate::sink::Batch;
use crate::snapshot::Item;
use crate::timestamp::{self, EpochSeconds};
use crate::transform::{self, Feed, RecordValues, ValueStats};
use crate::watermark::{Admission, Watermarks};
use crate::windows::WINDOW;

/// What became of a record. Stable names: they are metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordOutcome {
    /// New, and written as a line.
    New,
    /// Not later than the newest stored reading of its sensor.
    NotNewer,
    /// The same sensor and time appeared earlier in the snapshot.
    Duplicate,
    /// New, but without a single valid value (nothing to write).
    NoValues,
    /// Valid JSON that is not a record, or a record without a sensor id.
    Malformed,
    /// Missing or not `YYYY-MM-DD HH:MM:SS`.
    BadTimestamp,
    /// More than the tolerated clock skew ahead of now; it would block the sensor's newer
    /// readings until the clock caught up.
    Future,
    /// Not in the configured region (see [`crate::region`]).
    OutsideRegion,
}

impl RecordOutcome {
    pub(crate) const ALL: [RecordOutcome; 8] = [
        RecordOutcome::New,
        RecordOutcome::NotNewer,
        RecordOutcome::Duplicate,
        RecordOutcome::NoValues,
        RecordOutcome::Malformed,
        RecordOutcome::BadTimestamp,
        RecordOutcome::Future,
        RecordOutcome::OutsideRegion,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::New => "new",
            RecordOutcome::NotNewer => "not_newer",
            RecordOutcome::Duplicate => "duplicate",
            RecordOutcome::NoValues => "no_values",
            RecordOutcome::Malformed => "malformed",
            RecordOutcome::BadTimestamp => "bad_timestamp",
            RecordOutcome::Future => "future",
            RecordOutcome::OutsideRegion => "outside_region",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Counts of one poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Records by [`RecordOutcome::index`].
    pub(crate) records: [u64; RecordOutcome::ALL.len()],
    /// Values of the new records (including those with no valid value).
    pub(crate) values: ValueStats,
    /// The newest time of any record in the snapshot (in the region, not in the future),
    /// new or not: how current the source is. 0 when it had none.
    pub(crate) newest: EpochSeconds,
}

impl PollStats {
    pub(crate) fn records(&self, outcome: RecordOutcome) -> u64 {
        self.records[outcome.index()]
    }

    /// Records in the snapshot, whatever became of them.
    pub fn total_records(&self) -> u64 {
        self.records.iter().sum()
    }

    /// Lines produced: one per new record.
    #[cfg(test)]
    pub(crate) fn lines(&self) -> u64 {
        self.records(RecordOutcome::New)
    }
}

/// How the records of a poll are prepared: the same for every window of it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Preparation {
    /// The latest record time accepted (now plus the tolerated clock skew); later ones are
    /// [`RecordOutcome::Future`].
    pub(crate) latest: EpochSeconds,
    pub(crate) feed: Feed,
    pub(crate) region: Option<Arc<Region>>,
}

/// What the 24-hour window needs of a reading (readings feed, outdoor, with PM).
#[derive(Clone, Copy, Debug)]
struct ForWindow {
    pm10: Option<u32>,
    pm25: Option<u32>,
    coords: Option<(f64, f64)>,
    /// The record's escaped tags in [`Prepared::tags`].
    tags: (u32, u32),
}

/// A record as far as it can be taken without the watermarks: parsed, validated, its line
/// formatted. This is the part that runs on several threads.
#[derive(Clone, Copy, Debug)]
struct Entry {
    sensor: u64,
    time: EpochSeconds,
    /// End of the record's line in [`Prepared::lines`] (it starts where the previous ended;
    /// empty when the record has no valid value).
    line_end: usize,
    /// `None` while the watermarks still have to decide.
    rejected: Option<RecordOutcome>,
    values: RecordValues,
    window: Option<ForWindow>,
}

/// Records of one slice of a snapshot, prepared in order.
#[derive(Debug)]
pub(crate) struct Prepared {
    lines: String,
    /// Tags of the records that go into a window.
    tags: String,
    entries: Vec<Entry>,
}

impl Default for Prepared {
    /// Sized for one window ([`WINDOW`]) from the start: grown from empty, the buffers of every
    /// window were copied over and over as they doubled. A line is shorter than its record (it
    /// carries no ids of values, no altitude, no names of manufacturers), and a record of the
    /// feed is a few hundred bytes.
    fn default() -> Self {
        Prepared {
            lines: String::with_capacity(WINDOW / 2),
            tags: String::new(),
            entries: Vec::with_capacity(WINDOW / 256),
        }
    }
}

impl Prepared {
    /// Prepares one parsed item.
    pub(crate) fn push(&mut self, item: Item<'_>, how: &Preparation) {
        let mut entry = Entry {
            sensor: 0,
            time: 0,
            line_end: self.lines.len(),
            rejected: None,
            values: RecordValues::default(),
            window: None,
        };
        match item {
            Item::Record(record) => self.record(&record, how, &mut entry),
            Item::Malformed(e) => {
                tracing::debug!(error = %e, "skipping a malformed record");
                entry.rejected = Some(RecordOutcome::Malformed);
            }
        }
        self.entries.push(entry);
    }

    fn record(&mut self, record: &Record<'_>, how: &Preparation, entry: &mut Entry) {
        let Some(sensor) = record.sensor_id() else {
            entry.rejected = Some(RecordOutcome::Malformed);
            return;
        };
        let Some(time) = record.timestamp().and_then(timestamp::parse) else {
            entry.rejected = Some(RecordOutcome::BadTimestamp);
            return;
        };
        if time > how.latest {
            entry.rejected = Some(RecordOutcome::Future);
            return;
        }
        if how
            .region
            .as_ref()
            .is_some_and(|r| !region::contains(r, record))
        {
            entry.rejected = Some(RecordOutcome::OutsideRegion);
            return;
        }
        entry.sensor = sensor;
        entry.time = time;
        let (values, extract) =
            transform::append_line(&mut self.lines, record, sensor, time, how.feed);
        entry.values = values;
        entry.line_end = self.lines.len();
        let pm10 = extract.pm10.and_then(means::centi);
        let pm25 = extract.pm25.and_then(means::centi);
        if how.feed == Feed::Readings && !extract.indoor && (pm10.is_some() || pm25.is_some()) {
            let start = self.tags.len();
            transform::append_tags(&mut self.tags, record, sensor);
            entry.window = Some(ForWindow {
                pm10,
                pm25,
                coords: extract.coords,
                tags: (to_u32(start), to_u32(self.tags.len())),
            });
        }
    }
}

/// Offsets in a prepared block stay far below 4 GiB (see [`crate::windows::WINDOW`]).
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The sequential part of a poll: the watermarks' verdict on prepared records, in snapshot
/// order, and the lines of the new ones.
pub(crate) struct Ingest<'w> {
    watermarks: &'w mut Watermarks,
    pub(crate) stats: PollStats,
    /// The new readings a 24-hour window takes once they are stored.
    pub(crate) readings: Vec<Reading>,
}

impl<'w> Ingest<'w> {
    pub(crate) fn new(watermarks: &'w mut Watermarks) -> Self {
        Ingest {
            watermarks,
            stats: PollStats::default(),
            readings: Vec::new(),
        }
    }

    /// The watermarks, to tell them which readings were stored.
    pub(crate) fn watermarks(&mut self) -> &mut Watermarks {
        self.watermarks
    }

    /// Decides on every record of `block` and appends the lines of the new ones to `out`.
    pub(crate) fn admit(&mut self, block: &Prepared, out: &mut Batch) {
        let mut start = 0;
        for e in &block.entries {
            let line = &block.lines[start..e.line_end];
            start = e.line_end;
            if e.rejected.is_none() {
                self.stats.newest = self.stats.newest.max(e.time);
            }
            let outcome = match e.rejected {
                Some(outcome) => outcome,
                None => match self.watermarks.admit(e.sensor, e.time) {
                    Admission::NotNewer => RecordOutcome::NotNewer,
                    Admission::Duplicate => RecordOutcome::Duplicate,
                    Admission::New => {
                        self.stats.values.add(&e.values);
                        if line.is_empty() {
                            // Nothing to store, now or later.
                            self.watermarks.settled(e.sensor);
                            RecordOutcome::NoValues
                        } else {
                            out.push(line, e.sensor);
                            if let Some(w) = &e.window {
                                let (from, to) = (w.tags.0 as usize, w.tags.1 as usize);
                                self.readings.push(Reading {
                                    sensor: e.sensor,
                                    time: e.time,
                                    pm10: w.pm10,
                                    pm25: w.pm25,
                                    coords: w.coords,
                                    tags: block.tags[from..to].into(),
                                });
                            }
                            RecordOutcome::New
                        }
                    }
                },
            };
            self.stats.records[outcome.index()] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotParser;

    fn ingest(w: &mut Watermarks, body: &str) -> (PollStats, String) {
        let (stats, out, _) = ingest_with(w, body, Feed::Daily, None);
        (stats, out)
    }

    fn ingest_with(
        w: &mut Watermarks,
        body: &str,
        feed: Feed,
        region: Option<Region>,
    ) -> (PollStats, String, Vec<Reading>) {
        let how = Preparation {
            latest: timestamp::parse("2030-01-01 00:00:00").expect("valid"),
            feed,
            region: region.map(Arc::new),
        };
        let mut prepared = Prepared::default();
        let mut p = SnapshotParser::new();
        p.feed(body.as_bytes(), |item| prepared.push(item, &how))
            .expect("valid body");
        p.finish().expect("complete body");
        let mut out = Batch::default();
        let mut ingest = Ingest::new(w);
        ingest.admit(&prepared, &mut out);
        (ingest.stats, out.body().to_owned(), ingest.readings)
    }

    #[test]
    fn new_outdoor_readings_in_the_region_go_to_the_window() {
        let located = |sensor: u64, country: &str, indoor: u8, p1: &str| {
            format!(
                r#"{{"timestamp":"2024-01-15 10:00:00","location":{{"id":7,"country":"{country}","indoor":{indoor},"latitude":"51.5","longitude":"-0.1"}},"sensor":{{"id":{sensor},"sensor_type":{{"name":"SDS011"}}}},"sensordatavalues":[{{"value":"{p1}","value_type":"P1"}},{{"value":"20","value_type":"temperature"}}]}}"#
            )
        };
        let body = format!(
            "[{},{},{},{},{}]",
            located(1, "GB", 0, "12.35"),
            located(1, "GB", 0, "12.35"),
            located(2, "FR", 0, "5"),
            located(3, "GB", 1, "5"),
            located(4, "GB", 0, "nan"),
        );
        let region = Region::countries("GB").expect("valid");
        let mut w = Watermarks::new();
        let (stats, out, readings) = ingest_with(&mut w, &body, Feed::Readings, Some(region));
        assert_eq!(stats.records(RecordOutcome::OutsideRegion), 1);
        assert_eq!(stats.records(RecordOutcome::New), 3);
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.lines().all(|l| l.starts_with("air_quality_5min,")),
            "{out}"
        );
        assert_eq!(
            readings,
            [Reading {
                sensor: 1,
                time: timestamp::parse("2024-01-15 10:00:00").expect("valid"),
                pm10: Some(1235),
                pm25: None,
                coords: Some((51.5, -0.1)),
                tags: ",sensor_id=1,location_id=7,country=GB,sensor_type=SDS011".into(),
            }],
            "indoor (3) and PM-less (4) readings stay out; the repeat is a duplicate"
        );
        let mut w = Watermarks::new();
        let (_, _, readings) = ingest_with(&mut w, &body, Feed::Daily, None);
        assert!(readings.is_empty(), "24-hour means are no readings");
    }

    fn rec(sensor: u64, time: &str, p1: &str) -> String {
        format!(
            r#"{{"timestamp":"{time}","sensor":{{"id":{sensor}}},"sensordatavalues":[{{"value":"{p1}","value_type":"P1"}}]}}"#
        )
    }

    #[test]
    fn every_outcome_is_counted() {
        let body = format!(
            "[{},{},{},{},{},{},{},\"junk\",{}]",
            rec(1, "2024-01-15 10:00:00", "5"),
            rec(1, "2024-01-15 10:00:00", "5"),
            rec(2, "2024-01-15 10:00:00", "nan"),
            rec(3, "15.01.2024 10:00", "5"),
            rec(4, "2031-01-01 00:00:00", "5"),
            r#"{"timestamp":"2024-01-15 10:00:00","sensor":{"pin":"1"}}"#,
            rec(5, "2024-01-15 10:00:05", "7"),
            rec(1, "2024-01-15 09:00:00", "5"),
        );
        let mut w = Watermarks::new();
        let (stats, out) = ingest(&mut w, &body);
        use RecordOutcome::*;
        let got: Vec<_> = RecordOutcome::ALL
            .iter()
            .map(|&o| (o, stats.records(o)))
            .collect();
        assert_eq!(
            got,
            [
                (New, 3),
                (NotNewer, 0),
                (Duplicate, 1),
                (NoValues, 1),
                (Malformed, 2),
                (BadTimestamp, 1),
                (Future, 1),
                (OutsideRegion, 0),
            ]
        );
        assert_eq!(
            stats.newest,
            timestamp::parse("2024-01-15 10:00:05").expect("valid")
        );
        assert_eq!(out.lines().count(), 3);
        assert_eq!(stats.lines(), 3);
        assert_eq!(stats.total_records(), 9);

        w.commit_all();
        let (stats, out) = ingest(&mut w, &body);
        assert_eq!(stats.records(New), 0, "second run writes nothing: {out}");
        assert_eq!(stats.records(NotNewer), 5);
    }
}
