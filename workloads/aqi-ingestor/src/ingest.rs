//! One parsed item → a verdict, and a line when the record is new: the per-record pipeline
//! between the parser and the batch buffer, with its counts.
//!
//! It runs in two steps so that the expensive one can run on several threads: [`Prepared`]
//! parses the timestamp, validates the values and formats the line of every record of a window
//! (pure, per record, on a worker thread); [`Ingest::admit`] then asks the watermarks, in
//! snapshot order, which records are new and keeps their lines (cheap, and sequential by
//! nature).

use crate::record::Record;
use crate::snapshot::Item;
use crate::timestamp::{self, EpochSeconds};
use crate::transform::{self, RecordValues, ValueStats};
use crate::watermark::{Admission, Watermarks};

/// What became of a record. Stable names: they are metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
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
}

impl RecordOutcome {
    pub const ALL: [RecordOutcome; 7] = [
        RecordOutcome::New,
        RecordOutcome::NotNewer,
        RecordOutcome::Duplicate,
        RecordOutcome::NoValues,
        RecordOutcome::Malformed,
        RecordOutcome::BadTimestamp,
        RecordOutcome::Future,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::New => "new",
            RecordOutcome::NotNewer => "not_newer",
            RecordOutcome::Duplicate => "duplicate",
            RecordOutcome::NoValues => "no_values",
            RecordOutcome::Malformed => "malformed",
            RecordOutcome::BadTimestamp => "bad_timestamp",
            RecordOutcome::Future => "future",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Counts of one poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Records by [`RecordOutcome::index`].
    pub records: [u64; RecordOutcome::ALL.len()],
    /// Values of the new records (including those with no valid value).
    pub values: ValueStats,
}

impl PollStats {
    pub fn records(&self, outcome: RecordOutcome) -> u64 {
        self.records[outcome.index()]
    }

    pub fn total_records(&self) -> u64 {
        self.records.iter().sum()
    }

    /// Lines produced: one per new record.
    pub fn lines(&self) -> u64 {
        self.records(RecordOutcome::New)
    }
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
}

/// Records of one slice of a snapshot, prepared in order.
#[derive(Debug, Default)]
pub struct Prepared {
    lines: String,
    entries: Vec<Entry>,
}

impl Prepared {
    /// Prepares one parsed item. `latest`: the latest record time accepted (now plus the
    /// tolerated clock skew); later ones are [`RecordOutcome::Future`].
    pub fn push(&mut self, item: Item<'_>, latest: EpochSeconds) {
        let mut entry = Entry {
            sensor: 0,
            time: 0,
            line_end: self.lines.len(),
            rejected: None,
            values: RecordValues::default(),
        };
        match item {
            Item::Record(record) => self.record(&record, latest, &mut entry),
            Item::Malformed(e) => {
                tracing::debug!(error = %e, "skipping a malformed record");
                entry.rejected = Some(RecordOutcome::Malformed);
            }
        }
        self.entries.push(entry);
    }

    fn record(&mut self, record: &Record<'_>, latest: EpochSeconds, entry: &mut Entry) {
        let Some(sensor) = record.sensor_id() else {
            entry.rejected = Some(RecordOutcome::Malformed);
            return;
        };
        let Some(time) = record.timestamp().and_then(timestamp::parse) else {
            entry.rejected = Some(RecordOutcome::BadTimestamp);
            return;
        };
        if time > latest {
            entry.rejected = Some(RecordOutcome::Future);
            return;
        }
        entry.sensor = sensor;
        entry.time = time;
        entry.values = transform::append_line(&mut self.lines, record, sensor, time);
        entry.line_end = self.lines.len();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The sequential part of a poll: the watermarks' verdict on prepared records, in snapshot
/// order, and the lines of the new ones.
pub struct Ingest<'w> {
    watermarks: &'w mut Watermarks,
    pub stats: PollStats,
}

impl<'w> Ingest<'w> {
    pub fn new(watermarks: &'w mut Watermarks) -> Self {
        Ingest {
            watermarks,
            stats: PollStats::default(),
        }
    }

    /// Decides on every record of `block` and appends the lines of the new ones to `out`.
    pub fn admit(&mut self, block: &Prepared, out: &mut String) {
        let mut start = 0;
        for e in &block.entries {
            let line = &block.lines[start..e.line_end];
            start = e.line_end;
            let outcome = match e.rejected {
                Some(outcome) => outcome,
                None => match self.watermarks.admit(e.sensor, e.time) {
                    Admission::NotNewer => RecordOutcome::NotNewer,
                    Admission::Duplicate => RecordOutcome::Duplicate,
                    Admission::New => {
                        self.stats.values.add(&e.values);
                        if line.is_empty() {
                            RecordOutcome::NoValues
                        } else {
                            out.push_str(line);
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
        let latest = timestamp::parse("2030-01-01 00:00:00").expect("valid");
        let mut prepared = Prepared::default();
        let mut p = SnapshotParser::new();
        p.feed(body.as_bytes(), |item| prepared.push(item, latest))
            .expect("valid body");
        p.finish().expect("complete body");
        let mut out = String::new();
        let mut ingest = Ingest::new(w);
        ingest.admit(&prepared, &mut out);
        (ingest.stats, out)
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
            ]
        );
        assert_eq!(out.lines().count(), 3);
        assert_eq!(stats.lines(), 3);
        assert_eq!(stats.total_records(), 9);

        w.commit();
        let (stats, out) = ingest(&mut w, &body);
        assert_eq!(stats.records(New), 0, "second run writes nothing: {out}");
        assert_eq!(stats.records(NotNewer), 5);
    }
}
