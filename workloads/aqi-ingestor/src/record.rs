//! The Sensor.Community record, deserialised without copying: strings borrow from the input
//! buffer unless they contain JSON escapes.
//!
//! The model is deliberately lenient, because the feed is: numbers mostly arrive as strings but
//! not always (`pressure_at_sealevel` is a JSON number without an `id`), older data lacks
//! `altitude`, `indoor` and `exact_location`, and any field may be `null` or missing. Validation
//! (which values count, and why the others are skipped) happens in [`crate::values`], not here,
//! so that one odd field never costs the whole record. Fields the ingestor does not use
//! (`sampling_rate`, `altitude`, ids of values, ...) are skipped by serde without being stored.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One record of a snapshot: one sensor's reading (a set of values) at one time.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Record<'a> {
    #[serde(default, borrow)]
    pub(crate) timestamp: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) location: Option<Location<'a>>,
    #[serde(default, borrow)]
    pub(crate) sensor: Option<Sensor<'a>>,
    #[serde(default, borrow)]
    pub(crate) sensordatavalues: Vec<DataValue<'a>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Location<'a> {
    /// Shared by all sensors of one node.
    #[serde(default, borrow)]
    pub(crate) id: Scalar<'a>,
    #[serde(default, borrow)]
    pub(crate) latitude: Scalar<'a>,
    #[serde(default, borrow)]
    pub(crate) longitude: Scalar<'a>,
    #[serde(default, borrow)]
    pub(crate) country: Option<Text<'a>>,
    /// 1 for sensors inside a building; missing in older data (then outdoor).
    #[serde(default, borrow)]
    pub(crate) indoor: Scalar<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Sensor<'a> {
    #[serde(default, borrow)]
    pub(crate) id: Scalar<'a>,
    #[serde(default, borrow)]
    pub(crate) sensor_type: Option<SensorType<'a>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct SensorType<'a> {
    #[serde(default, borrow)]
    pub(crate) name: Option<Text<'a>>,
}

/// One measured quantity of a record, e.g. `{"value": "12.35", "value_type": "P1"}`.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct DataValue<'a> {
    #[serde(default, borrow)]
    pub(crate) value_type: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub(crate) value: Scalar<'a>,
}

impl Record<'_> {
    pub(crate) fn sensor_id(&self) -> Option<u64> {
        self.sensor.as_ref().and_then(|s| s.id.as_u64())
    }

    pub(crate) fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_ref().map(Text::as_str)
    }

    pub(crate) fn sensor_type(&self) -> &str {
        self.sensor
            .as_ref()
            .and_then(|s| s.sensor_type.as_ref())
            .and_then(|t| t.name.as_ref())
            .map_or("", Text::as_str)
    }

    pub(crate) fn country(&self) -> &str {
        self.location
            .as_ref()
            .and_then(|l| l.country.as_ref())
            .map_or("", Text::as_str)
    }

    pub(crate) fn location_id(&self) -> Option<u64> {
        self.location.as_ref().and_then(|l| l.id.as_u64())
    }

    /// `indoor` is 0/1 in the feed; `true` and `"1"` are read the same way.
    pub(crate) fn is_indoor(&self) -> bool {
        self.location.as_ref().is_some_and(|l| match &l.indoor {
            Scalar::UInt(n) => *n != 0,
            Scalar::Int(n) => *n != 0,
            Scalar::Float(f) => *f != 0.0,
            Scalar::Bool(b) => *b,
            Scalar::Text(t) => matches!(t.as_str().trim(), "1" | "true"),
            Scalar::Missing | Scalar::Null | Scalar::Other => false,
        })
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
///
/// serde's own `Cow<str>` impl always copies (only a bare `#[serde(borrow)] Cow<'a, str>` field
/// borrows), so `Option<Cow<str>>` would allocate once per string; this type borrows in every
/// position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON scalar, kept as it came: the feed sends numbers as strings (`"12.35"`), as numbers
/// (`101968.66`), and occasionally as `null`, `""` or `"nan"`. Objects and arrays in a scalar
/// position are consumed and reported as [`Scalar::Other`] instead of failing the record.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Scalar<'a> {
    /// The key was absent.
    #[default]
    Missing,
    Null,
    Bool(bool),
    UInt(u64),
    Int(i64),
    Float(f64),
    Text(Text<'a>),
    /// An object or an array.
    Other,
}

impl Scalar<'_> {
    /// An identifier: a non-negative integer, given as a number or as a decimal string.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Scalar::UInt(n) => Some(*n),
            Scalar::Int(n) => u64::try_from(*n).ok(),
            Scalar::Text(t) => t.as_str().trim().parse().ok(),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::UInt(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Text(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Text(Text(Cow::Owned(v))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Scalar::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Record<'_> {
        serde_json::from_str(json).expect("record parses")
    }

    #[test]
    fn reads_the_current_format_and_borrows_its_strings() {
        let json = r#"{"id":17000000123,"sampling_rate":null,"timestamp":"2024-01-15 10:02:27",
            "location":{"id":61234,"latitude":"48.778","longitude":"9.146","altitude":"351.7",
                        "country":"DE","exact_location":0,"indoor":0},
            "sensor":{"id":71234,"pin":"1",
                      "sensor_type":{"id":14,"name":"SDS011","manufacturer":"Nova Fitness"}},
            "sensordatavalues":[{"id":30000000001,"value":"12.35","value_type":"P1"},
                                {"id":30000000002,"value":"7.10","value_type":"P2"}]}"#;
        let r = record(json);
        assert_eq!(r.sensor_id(), Some(71234));
        assert_eq!(r.location_id(), Some(61234));
        assert_eq!(r.timestamp(), Some("2024-01-15 10:02:27"));
        assert_eq!(r.sensor_type(), "SDS011");
        assert_eq!(r.country(), "DE");
        assert!(!r.is_indoor());
        assert_eq!(r.sensordatavalues.len(), 2);
        let v = &r.sensordatavalues[0];
        assert!(matches!(
            &v.value,
            Scalar::Text(Text(Cow::Borrowed("12.35")))
        ));
        assert!(matches!(&v.value_type, Some(Text(Cow::Borrowed("P1")))));
    }

    #[test]
    fn numeric_values_without_id_and_missing_optional_fields_are_accepted() {
        let json = r#"{"timestamp":"2018-03-05 17:33:37",
            "location":{"country":"DE","latitude":"52.411","longitude":"9.012","id":2061},
            "sensor":{"pin":"11","sensor_type":{"name":"BME280"},"id":4094},
            "sensordatavalues":[{"value_type":"pressure_at_sealevel","value":99493.59}]}"#;
        let r = record(json);
        assert_eq!(r.sensordatavalues[0].value, Scalar::Float(99493.59));
        assert_eq!(
            r.location.as_ref().map(|l| &l.indoor),
            Some(&Scalar::Missing)
        );
    }

    #[test]
    fn odd_shapes_in_scalar_positions_do_not_fail_the_record() {
        let json = r#"{"timestamp":"2018-03-05 17:33:37","sensor":{"id":"4094"},
            "location":{"id":null,"indoor":"1","latitude":{"deg":1},"longitude":[1,2]},
            "sensordatavalues":[{"value_type":"P1","value":null},{"value_type":"P2"},
                                {"value_type":"x","value":true}]}"#;
        let r = record(json);
        assert_eq!(r.sensor_id(), Some(4094));
        assert_eq!(r.location_id(), None);
        assert!(r.is_indoor());
        let l = r.location.as_ref().expect("location");
        assert_eq!(
            (&l.latitude, &l.longitude),
            (&Scalar::Other, &Scalar::Other)
        );
        let values: Vec<_> = r.sensordatavalues.iter().map(|v| v.value.clone()).collect();
        assert_eq!(values, [Scalar::Null, Scalar::Missing, Scalar::Bool(true)]);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let r = record(r#"{"sensor":{"id":1,"sensor_type":{"name":"A\u0020B\"C"}}}"#);
        assert_eq!(r.sensor_type(), "A B\"C");
    }

    #[test]
    fn ids_above_two_to_the_32_survive() {
        let r = record(r#"{"sensor":{"id":28514541414}}"#);
        assert_eq!(r.sensor_id(), Some(28_514_541_414));
    }
}
