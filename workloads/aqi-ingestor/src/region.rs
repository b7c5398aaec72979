//! Which records lie in a [`Region`] (the type lives in `iot-common`, shared with the operator).
//!
//! The region serves twice. For 5-minute readings from Sensor.Community it becomes a query of
//! the filter API (`/airrohr/v1/filter/country=…`, `box=…`, `area=…`), so that only the region
//! is downloaded. And every record of every source is checked against it locally, so that a
//! file, a custom URL or the 24-hour file (which has no filter) obey the same region.

pub(crate) use iot_common::region::Region;

use crate::record::Record;
use crate::values;

/// Whether a record lies in the region. Box and area need the record's coordinates (a record
/// without valid ones lies nowhere); countries need its country code.
pub(crate) fn contains(region: &Region, record: &Record<'_>) -> bool {
    match region {
        Region::Countries(_) => region.contains_sensor(record.country().trim(), None),
        _ => coordinates(record).is_some_and(|(lat, lon)| region.contains_point(lat, lon)),
    }
}

/// A record's valid coordinates.
pub(crate) fn coordinates(record: &Record<'_>) -> Option<(f64, f64)> {
    let l = record.location.as_ref()?;
    let lat = values::coordinate(&l.latitude, 90.0).ok()?;
    let lon = values::coordinate(&l.longitude, 180.0).ok()?;
    Some((lat, lon))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Record<'_> {
        serde_json::from_str(json).expect("record")
    }

    const LONDON: &str = r#"{"location":{"country":"GB","latitude":"51.5074","longitude":"-0.1278"},"sensor":{"id":1}}"#;
    const PARIS: &str = r#"{"location":{"country":"fr","latitude":"48.8566","longitude":"2.3522"},"sensor":{"id":2}}"#;
    const NOWHERE: &str =
        r#"{"location":{"country":"GB","latitude":"","longitude":"x"},"sensor":{"id":3}}"#;

    #[test]
    fn countries_match_the_code_in_any_case() {
        let r: Region = "country=gb, IE".parse().expect("valid");
        assert!(contains(&r, &record(LONDON)));
        assert!(
            contains(&r, &record(NOWHERE)),
            "countries need no coordinates"
        );
        assert!(!contains(&r, &record(PARIS)));
        let france = Region::countries("FR").expect("valid");
        assert!(contains(&france, &record(PARIS)), "the feed's lower case");
    }

    #[test]
    fn a_box_needs_the_record_s_coordinates() {
        let r = Region::bounding_box("49.9,-8.2,60.9,1.8").expect("valid");
        assert!(contains(&r, &record(LONDON)));
        assert!(!contains(&r, &record(PARIS)));
        assert!(!contains(&r, &record(NOWHERE)));
    }

    #[test]
    fn an_area_holds_the_records_within_its_radius() {
        let r = Region::area("51.5074,-0.1278,350").expect("valid");
        assert!(contains(&r, &record(PARIS)));
        let r = Region::area("51.5074,-0.1278,340").expect("valid");
        assert!(!contains(&r, &record(PARIS)));
        assert!(contains(&r, &record(LONDON)));
    }
}
