//! One admitted record → one line of InfluxDB line protocol.
//!
//! ```text
//! air_quality,sensor_id=6507,location_id=3287,country=NL,sensor_type=SDS011 P1=20.40,P2=14.80,aqi_pm10=2i,aqi_pm25=2i,aqi=2i,latitude=52.2200,longitude=5.2700,origin="upstream" 1555424572000000000
//! ```
//!
//! Fields: every valid numeric value under its `value_type` (floats, in the record's order,
//! written as the feed's text when that is a plain decimal, so `"20.40"` stays `20.40`),
//! then the DAQI of PM10 (`P1`) and PM2.5 (`P2`) and their maximum `aqi` as integers where a
//! valid concentration exists and the sensor is outdoors, then the location's coordinates.
//! Value fields are always floats and index fields always integers, so a field's type never
//! changes between points (InfluxDB would reject the write).
//!
//! Two feeds, two measurements: 24-hour means (the upstream file) go to `air_quality` with
//! `origin="upstream"`, beside the means computed here ([`crate::means`], `origin="computed"`);
//! 5-minute readings go to `air_quality_5min`, without an index (DAQI is defined on 24-hour
//! means) and with `indoor=1i` for indoor sensors, so that their window can be rebuilt after a
//! restart without them.

use iot_common::Line;

use crate::daqi;
use crate::record::{DataValue, Record, Scalar};
use crate::timestamp::{self, EpochSeconds};
use crate::values::{self, RESERVED_FIELDS, SkipReason};

/// 24-hour means and their index.
pub(crate) const MEASUREMENT: &str = "air_quality";
/// 5-minute readings (no index).
pub(crate) const READINGS_MEASUREMENT: &str = "air_quality_5min";

/// What a snapshot holds, and so where its records go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Feed {
    /// 24-hour means (`data.24h.json`, or any source given as such): `air_quality`, indexed.
    #[default]
    Daily,
    /// 5-minute readings (`data.json`, the filter API): `air_quality_5min`, no index.
    Readings,
}

impl Feed {
    /// A stable name for logs and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Feed::Daily => "daily",
            Feed::Readings => "readings",
        }
    }

    pub(crate) fn measurement(self) -> &'static str {
        match self {
            Feed::Daily => MEASUREMENT,
            Feed::Readings => READINGS_MEASUREMENT,
        }
    }
}

/// The valid values of a record that the 24-hour window needs (see [`crate::means`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Extract {
    /// PM10 (`P1`) and PM2.5 (`P2`), µg/m³.
    pub(crate) pm10: Option<f64>,
    pub(crate) pm25: Option<f64>,
    pub(crate) coords: Option<(f64, f64)>,
    pub(crate) indoor: bool,
}

/// What became of the values of one record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RecordValues {
    /// Values skipped, indexed by [`SkipReason::index`] (saturating: a record has a handful).
    pub(crate) skipped: [u8; SkipReason::ALL.len()],
    /// Values written as fields (coordinates and indices not included); 0 means no line.
    pub(crate) written: u8,
    /// A PM value got no index because the sensor is indoors.
    pub(crate) indoor_without_aqi: bool,
}

impl RecordValues {
    fn skip(&mut self, reason: SkipReason) {
        let n = &mut self.skipped[reason.index()];
        *n = n.saturating_add(1);
    }

    #[cfg(test)]
    pub(crate) fn skipped(&self, reason: SkipReason) -> u8 {
        self.skipped[reason.index()]
    }
}

/// Per-value outcomes, summed over a poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ValueStats {
    /// Values skipped, indexed by [`SkipReason::index`].
    pub(crate) skipped: [u64; SkipReason::ALL.len()],
    /// Values written as fields (coordinates and indices not included).
    pub(crate) written: u64,
    /// Records with a PM value that got no index because the sensor is indoors.
    pub(crate) indoor_without_aqi: u64,
}

impl ValueStats {
    pub(crate) fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped[reason.index()]
    }

    pub(crate) fn add(&mut self, record: &RecordValues) {
        for (total, n) in self.skipped.iter_mut().zip(record.skipped) {
            *total += u64::from(n);
        }
        self.written += u64::from(record.written);
        self.indoor_without_aqi += u64::from(record.indoor_without_aqi);
    }
}

/// The series tags of a record: one sensor at one location (the same for both feeds, so that
/// a computed mean lands in the series of the upstream ones).
fn tags<'b>(line: Line<'b>, record: &Record<'_>, sensor_id: u64) -> Line<'b> {
    let mut ids = itoa::Buffer::new();
    let mut line = line.tag("sensor_id", ids.format(sensor_id));
    if let Some(location_id) = record.location_id() {
        line = line.tag("location_id", itoa::Buffer::new().format(location_id));
    }
    line.tag("country", record.country())
        .tag("sensor_type", record.sensor_type())
}

/// Appends the escaped tags of a record (`,sensor_id=1,location_id=2,…`) to `out`.
pub(crate) fn append_tags(out: &mut String, record: &Record<'_>, sensor_id: u64) {
    // A line of no measurement and no field: only its tags stay in the buffer.
    let _ = tags(Line::new(out, ""), record, sensor_id);
}

/// Appends the line of `record` (whose sensor id and time the caller has already parsed) to
/// `out`. When the record has no valid value (`written == 0` in the result) nothing is
/// appended: coordinates alone are not a reading.
pub(crate) fn append_line(
    out: &mut String,
    record: &Record<'_>,
    sensor_id: u64,
    time: EpochSeconds,
    feed: Feed,
) -> (RecordValues, Extract) {
    let mut stats = RecordValues::default();
    let mut extract = Extract {
        indoor: record.is_indoor(),
        ..Extract::default()
    };
    let start = out.len();
    let mut line = tags(Line::new(out, feed.measurement()), record, sensor_id);

    let values = &record.sensordatavalues;
    let mut written = 0u8;
    let (mut pm10, mut pm25) = (None, None);
    for (i, v) in values.iter().enumerate() {
        let name = v.value_type.as_ref().map_or("", |t| t.as_str());
        if name.is_empty() || RESERVED_FIELDS.contains(&name) {
            stats.skip(SkipReason::InvalidName);
            continue;
        }
        let x = match values::validate(name, &v.value) {
            Ok(x) => x,
            Err(reason) => {
                stats.skip(reason);
                continue;
            }
        };
        if earlier_valid(&values[..i], name) {
            stats.skip(SkipReason::Duplicate);
            continue;
        }
        match name {
            "P1" => pm10 = Some(x),
            "P2" => pm25 = Some(x),
            _ => {}
        }
        line = number_field(line, name, &v.value, x);
        written = written.saturating_add(1);
    }
    if written == 0 {
        // `finish` removes a line without fields.
        line.finish(0);
        debug_assert_eq!(out.len(), start);
        return (stats, extract);
    }
    stats.written = written;
    extract.pm10 = pm10;
    extract.pm25 = pm25;

    if extract.indoor {
        // Indoor air says nothing about the air quality index of a place.
        stats.indoor_without_aqi = pm10.is_some() || pm25.is_some();
        if feed == Feed::Readings {
            line = line.field_i64("indoor", 1);
        }
    } else if feed == Feed::Daily {
        let aqi_pm10 = pm10.and_then(daqi::pm10);
        let aqi_pm25 = pm25.and_then(daqi::pm25);
        if let Some(i) = aqi_pm10 {
            line = line.field_i64("aqi_pm10", i64::from(i));
        }
        if let Some(i) = aqi_pm25 {
            line = line.field_i64("aqi_pm25", i64::from(i));
        }
        if let Some(i) = aqi_pm10.max(aqi_pm25) {
            line = line.field_i64("aqi", i64::from(i));
        }
    }

    if let Some(l) = &record.location {
        let lat = values::coordinate(&l.latitude, 90.0);
        let lon = values::coordinate(&l.longitude, 180.0);
        match lat {
            Ok(x) => line = number_field(line, "latitude", &l.latitude, x),
            Err(reason) => stats.skip(reason),
        }
        match lon {
            Ok(x) => line = number_field(line, "longitude", &l.longitude, x),
            Err(reason) => stats.skip(reason),
        }
        extract.coords = lat.ok().zip(lon.ok());
    }
    if feed == Feed::Daily {
        line = line.field_str("origin", "upstream");
    }
    line.finish(timestamp::to_nanos(time));
    (stats, extract)
}

/// Adds the float field `name` with the valid value `x`, which came from `raw`. Text is written
/// as the feed sent it ("20.40") when it is a plain decimal: exact, and formatting floats was the
/// largest single cost of the transform. Zero is formatted, so that "-0.00" comes out as "0".
fn number_field<'b>(line: Line<'b>, name: &str, raw: &Scalar<'_>, x: f64) -> Line<'b> {
    match raw {
        Scalar::Text(t) if x != 0.0 => line.field_decimal(name, t.as_str()),
        _ => line.field_f64(name, x),
    }
}

/// Whether an earlier value of the record has the same type and a valid value (and so was
/// written). Names rarely repeat, so the re-validation almost never runs.
fn earlier_valid(earlier: &[DataValue<'_>], name: &str) -> bool {
    earlier.iter().any(|e| {
        e.value_type.as_ref().is_some_and(|t| t.as_str() == name)
            && values::validate(name, &e.value).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: EpochSeconds = 1_555_424_572;

    fn line_of(json: &str) -> (Option<String>, RecordValues) {
        let record: Record<'_> = serde_json::from_str(json).expect("record");
        let mut out = String::from("previous\n");
        let sensor = record.sensor_id().expect("sensor id");
        let (stats, _) = append_line(&mut out, &record, sensor, T, Feed::Daily);
        let line = out.strip_prefix("previous\n").expect("prefix kept");
        assert_eq!(stats.written > 0, !line.is_empty());
        ((stats.written > 0).then(|| line.to_string()), stats)
    }

    const SDS011: &str = r#"{"timestamp":"2019-04-16 14:22:52",
        "location":{"id":3287,"latitude":"52.2200","longitude":"5.2700","altitude":"4.7","country":"NL"},
        "sensor":{"id":6507,"pin":"1","sensor_type":{"id":14,"name":"SDS011","manufacturer":"Nova Fitness"}},
        "sensordatavalues":[{"id":1,"value":"20.40","value_type":"P1"},{"id":2,"value":"14.80","value_type":"P2"}]}"#;

    #[test]
    fn a_pm_record_gets_values_indices_and_coordinates() {
        let (line, stats) = line_of(SDS011);
        assert_eq!(
            line.as_deref(),
            Some(
                "air_quality,sensor_id=6507,location_id=3287,country=NL,sensor_type=SDS011 \
                 P1=20.40,P2=14.80,aqi_pm10=2i,aqi_pm25=2i,aqi=2i,latitude=52.2200,longitude=5.2700,origin=\"upstream\" \
                 1555424572000000000\n"
            )
        );
        assert_eq!(stats.written, 2);
    }

    #[test]
    fn p1_is_banded_as_pm10_and_p2_as_pm25() {
        // PM10 14 → 1, PM2.5 14 → 2: a swapped table would give the opposite.
        let json = SDS011.replace("20.40", "14").replace("14.80", "14");
        let line = line_of(&json).0.expect("line");
        assert!(line.contains("aqi_pm10=1i,aqi_pm25=2i,aqi=2i"), "{line}");
    }

    #[test]
    fn aqi_is_the_larger_index_and_present_with_one_pollutant() {
        let json = SDS011.replace("20.40", "120").replace("14.80", "3");
        let line = line_of(&json).0.expect("line");
        assert!(line.contains("aqi_pm10=10i,aqi_pm25=1i,aqi=10i"), "{line}");
        let only_pm10 = SDS011.replace("14.80", "nan");
        let (line, stats) = line_of(&only_pm10);
        let line = line.expect("line");
        assert!(
            line.contains("P1=20.40,aqi_pm10=2i,aqi=2i,latitude"),
            "{line}"
        );
        assert_eq!(stats.skipped(SkipReason::Nan), 1);
    }

    #[test]
    fn saturated_values_are_skipped_and_get_no_index() {
        let json = SDS011
            .replace("20.40", "1999.90")
            .replace("14.80", "999.90");
        let (line, stats) = line_of(&json);
        assert_eq!(line, None, "no valid value, no line");
        assert_eq!(stats.skipped(SkipReason::OutOfRange), 2);
    }

    #[test]
    fn indoor_sensors_keep_their_values_but_get_no_index() {
        let json = SDS011.replace(r#""country":"NL""#, r#""country":"NL","indoor":1"#);
        let (line, stats) = line_of(&json);
        let line = line.expect("line");
        assert!(line.contains(" P1=20.40,P2=14.80,latitude="), "{line}");
        assert!(!line.contains("aqi"), "{line}");
        assert!(stats.indoor_without_aqi);
    }

    #[test]
    fn readings_have_no_index_and_mark_indoor_sensors() {
        let record: Record<'_> = serde_json::from_str(SDS011).expect("record");
        let mut out = String::new();
        let (_, extract) = append_line(&mut out, &record, 6507, T, Feed::Readings);
        assert_eq!(
            out,
            "air_quality_5min,sensor_id=6507,location_id=3287,country=NL,sensor_type=SDS011 \
             P1=20.40,P2=14.80,latitude=52.2200,longitude=5.2700 1555424572000000000\n"
        );
        assert_eq!(
            extract,
            Extract {
                pm10: Some(20.4),
                pm25: Some(14.8),
                coords: Some((52.22, 5.27)),
                indoor: false
            }
        );
        let indoor = SDS011.replace(r#""country":"NL""#, r#""country":"NL","indoor":1"#);
        let record: Record<'_> = serde_json::from_str(&indoor).expect("record");
        let mut out = String::new();
        let (stats, extract) = append_line(&mut out, &record, 6507, T, Feed::Readings);
        assert!(
            out.contains(" P1=20.40,P2=14.80,indoor=1i,latitude="),
            "{out}"
        );
        assert!(extract.indoor && stats.indoor_without_aqi);
        let mut tags = String::new();
        append_tags(&mut tags, &record, 6507);
        assert_eq!(
            tags,
            ",sensor_id=6507,location_id=3287,country=NL,sensor_type=SDS011"
        );
    }

    #[test]
    fn weather_records_have_no_index_and_keep_negative_temperatures() {
        let json = r#"{"sensor":{"id":8563,"sensor_type":{"name":"DHT22"}},
            "location":{"id":4319,"country":"DE","latitude":"52.523","longitude":"13.401"},
            "sensordatavalues":[{"value":"-1.60","value_type":"temperature"},
                                {"value":"41.70","value_type":"humidity"}]}"#;
        let line = line_of(json).0.expect("line");
        assert_eq!(
            line,
            "air_quality,sensor_id=8563,location_id=4319,country=DE,sensor_type=DHT22 \
             temperature=-1.60,humidity=41.70,latitude=52.523,longitude=13.401,origin=\"upstream\" 1555424572000000000\n"
        );
    }

    #[test]
    fn numeric_json_values_and_spaces_in_tags() {
        let json = r#"{"sensor":{"id":77506,"sensor_type":{"name":"Radiation Si22G"}},
            "location":{"id":66616,"country":"AT"},
            "sensordatavalues":[{"value":72,"value_type":"counts_per_minute"},
                                {"value":101968.66,"value_type":"pressure_at_sealevel"}]}"#;
        let line = line_of(json).0.expect("line");
        assert_eq!(
            line,
            "air_quality,sensor_id=77506,location_id=66616,country=AT,sensor_type=Radiation\\ Si22G \
             counts_per_minute=72,pressure_at_sealevel=101968.66,origin=\"upstream\" 1555424572000000000\n"
        );
    }

    #[test]
    fn repeated_and_reserved_value_types_are_skipped() {
        let json = r#"{"sensor":{"id":1},
            "sensordatavalues":[{"value":"bad","value_type":"P1"},{"value":"5","value_type":"P1"},
                                {"value":"6","value_type":"P1"},{"value":"1","value_type":"aqi"},
                                {"value":"1","value_type":""},{"value":"1"}]}"#;
        let (line, stats) = line_of(json);
        let line = line.expect("line");
        assert_eq!(
            line,
            "air_quality,sensor_id=1 P1=5,aqi_pm10=1i,aqi=1i,origin=\"upstream\" 1555424572000000000\n"
        );
        assert_eq!(stats.skipped(SkipReason::NonNumeric), 1);
        assert_eq!(stats.skipped(SkipReason::Duplicate), 1);
        assert_eq!(stats.skipped(SkipReason::InvalidName), 3);
    }

    #[test]
    fn bad_coordinates_are_left_out_and_counted() {
        let json = SDS011
            .replace(r#""52.2200""#, r#""""#)
            .replace(r#""5.2700""#, r#""500""#);
        let (line, stats) = line_of(&json);
        let line = line.expect("line");
        assert!(
            !line.contains("latitude") && !line.contains("longitude"),
            "{line}"
        );
        assert_eq!(stats.skipped(SkipReason::Empty), 1);
        assert_eq!(stats.skipped(SkipReason::OutOfRange), 1);
    }

    #[test]
    fn a_record_without_valid_values_writes_nothing() {
        let json = r#"{"sensor":{"id":1},"location":{"latitude":"1","longitude":"2"},
            "sensordatavalues":[{"value":"","value_type":"P1"},{"value":"-1","value_type":"P2"}]}"#;
        let (line, stats) = line_of(json);
        assert_eq!(line, None);
        assert_eq!(stats.skipped(SkipReason::Empty), 1);
        assert_eq!(stats.skipped(SkipReason::Negative), 1);
    }
}
