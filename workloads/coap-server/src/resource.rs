//! The server's resources, as a pure function from a parsed request to what to do with it.
//!
//! `POST|PUT /sensors/dht/temperature` and `/sensors/dht/humidity` take a plain-text number
//! (`25.5`), optionally with `?place=room2&sensor=dht-7`; `GET /.well-known/core` lists them
//! (RFC 6690). Everything else gets a precise error answer.

use coap_lite::{ContentFormat, MessageClass, RequestType, ResponseType};
use smallvec::SmallVec;

use iot_common::coap::option::{CONTENT_FORMAT, URI_PATH, URI_QUERY};
use iot_common::coap::{self, Message};

/// What the server does with a request.
#[derive(Debug, PartialEq)]
pub(crate) enum Action<'a> {
    /// Store the reading; answer 2.04 once it is in InfluxDB (5.03 if it cannot be).
    Store(Reading<'a>),
    /// Answer at once.
    Reply(Reply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Measurement {
    Temperature,
    Humidity,
}

impl Measurement {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Measurement::Temperature => "temperature",
            Measurement::Humidity => "humidity",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Measurement::Temperature => "Temperature",
            Measurement::Humidity => "Humidity",
        }
    }

    /// The range a DHT22 can measure; anything outside is a broken sensor or a bad client.
    fn valid_range(self) -> (f64, f64, &'static str) {
        match self {
            Measurement::Temperature => (-40.0, 80.0, "°C"),
            Measurement::Humidity => (0.0, 100.0, "%"),
        }
    }
}

/// A reading; its tags are borrowed from the request's datagram.
#[derive(Debug, PartialEq)]
pub(crate) struct Reading<'a> {
    pub(crate) measurement: Measurement,
    pub(crate) value: f64,
    pub(crate) place: &'a str,
    pub(crate) sensor: Option<&'a str>,
    /// The sensor's own time of the reading (`ts=`), if it sent one.
    pub(crate) taken_at_ms: Option<i64>,
}

impl Reading<'_> {
    /// The payload of its 2.04 answer.
    pub(crate) fn stored(&self) -> Stored {
        Stored {
            measurement: self.measurement,
            value: self.value,
        }
    }
}

/// The payload of a 2.04 answer, in the reference server's words; written straight into the
/// answer datagram (`Display`), so a pending answer holds no text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Stored {
    measurement: Measurement,
    value: f64,
}

impl std::fmt::Display for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={} saved successfully!",
            self.measurement.label(),
            self.value
        )
    }
}

#[derive(Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) code: ResponseType,
    pub(crate) payload: String,
    pub(crate) content_format: Option<ContentFormat>,
    /// Why a request was refused, as a metrics label.
    pub(crate) reason: Option<&'static str>,
}

impl Reply {
    fn error(code: ResponseType, reason: &'static str, payload: String) -> Action<'static> {
        Action::Reply(Reply {
            code,
            payload,
            content_format: Some(ContentFormat::TextPlain),
            reason: Some(reason),
        })
    }
}

pub(crate) const WELL_KNOWN_CORE: &str = "</sensors/dht/temperature>;rt=\"temperature\";ct=0;title=\"DHT temperature (°C), POST a number\",\
</sensors/dht/humidity>;rt=\"humidity\";ct=0;title=\"DHT relative humidity (%), POST a number\"";

/// Options this server understands; an unknown critical (odd-numbered) option is refused with
/// 4.02 as RFC 7252 §5.4.1 requires.
/// Uri-Host (3), Uri-Port (7), Uri-Path, Content-Format, Uri-Query, Accept (17), Size1 (60).
const KNOWN_OPTIONS: &[u16] = &[3, 7, URI_PATH, CONTENT_FORMAT, URI_QUERY, 17, 60];
const MAX_TAG_LEN: usize = 64;

/// The server's clock and the database's retention, to check a sensor's own `ts=`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// Unix milliseconds.
    pub(crate) now_ms: i64,
    /// How long the database keeps points, when it does not keep them forever.
    pub(crate) retention_ms: Option<i64>,
}

pub(crate) fn handle<'a>(req: &Message<'a>, default_place: &'a str, clock: Clock) -> Action<'a> {
    let MessageClass::Request(method) = req.class else {
        return Reply::error(
            ResponseType::BadRequest,
            "not_a_request",
            "expected a request".into(),
        );
    };
    if let Some(n) = req
        .options()
        .map(|(n, _)| n)
        .find(|n| n % 2 == 1 && !KNOWN_OPTIONS.contains(n))
    {
        return Reply::error(
            ResponseType::BadOption,
            "bad_option",
            format!("critical option {n} is not supported"),
        );
    }
    let path = uri_path(req);
    let measurement = match path.as_slice() {
        [".well-known", "core"] => return well_known(method),
        ["sensors", "dht", "temperature"] => Measurement::Temperature,
        ["sensors", "dht", "humidity"] => Measurement::Humidity,
        _ => {
            return Reply::error(
                ResponseType::NotFound,
                "not_found",
                format!("no resource /{}; see /.well-known/core", path.join("/")),
            );
        }
    };
    if !matches!(method, RequestType::Post | RequestType::Put) {
        return Reply::error(
            ResponseType::MethodNotAllowed,
            "method_not_allowed",
            format!("/{} takes POST or PUT", path.join("/")),
        );
    }
    // Any format but text/plain (0) is refused, one coap-lite does not know included.
    if req
        .first(CONTENT_FORMAT)
        .is_some_and(|cf| coap::uint(cf) != Some(usize::from(ContentFormat::TextPlain) as u32))
    {
        return Reply::error(
            ResponseType::UnsupportedContentFormat,
            "content_format",
            "send the reading as text/plain (content-format 0)".into(),
        );
    }
    let q = match query(req, default_place, clock) {
        Ok(q) => q,
        Err((reason, msg)) => return Reply::error(ResponseType::BadRequest, reason, msg),
    };
    match parse_value(req.payload, measurement) {
        Ok(value) => Action::Store(Reading {
            measurement,
            value,
            place: q.place,
            sensor: q.sensor,
            taken_at_ms: q.taken_at_ms,
        }),
        Err((reason, msg)) => Reply::error(ResponseType::BadRequest, reason, msg),
    }
}

fn well_known(method: RequestType) -> Action<'static> {
    if method != RequestType::Get {
        return Reply::error(
            ResponseType::MethodNotAllowed,
            "method_not_allowed",
            "/.well-known/core takes GET".into(),
        );
    }
    Action::Reply(Reply {
        code: ResponseType::Content,
        payload: WELL_KNOWN_CORE.into(),
        content_format: Some(ContentFormat::ApplicationLinkFormat),
        reason: None,
    })
}

/// The path's segments; a reading's path has three.
fn uri_path<'a>(req: &Message<'a>) -> SmallVec<[&'a str; 4]> {
    req.values(URI_PATH)
        .map(|s| std::str::from_utf8(s).unwrap_or("\u{fffd}"))
        .filter(|s| !s.is_empty())
        .collect()
}

/// How far a sensor's own clock (`ts=`) may lie in the past or the future.
const MAX_PAST_MS: i64 = 7 * 24 * 3600 * 1000;
const MAX_FUTURE_MS: i64 = 60 * 1000;

struct Query<'a> {
    place: &'a str,
    sensor: Option<&'a str>,
    taken_at_ms: Option<i64>,
}

/// Why a query is refused: a metrics label and the words for the client.
type QueryError = (&'static str, String);

fn query<'a>(
    req: &Message<'a>,
    default_place: &'a str,
    clock: Clock,
) -> Result<Query<'a>, QueryError> {
    let bad = |msg: String| ("bad_query", msg);
    let mut place = None;
    let mut sensor = None;
    let mut taken_at_ms = None;
    for q in req.values(URI_QUERY) {
        let q = std::str::from_utf8(q).map_err(|_| bad("query is not UTF-8".to_string()))?;
        let (key, value) = q.split_once('=').unwrap_or((q, ""));
        let slot = match key {
            "place" => &mut place,
            "sensor" => &mut sensor,
            "ts" => {
                taken_at_ms = Some(timestamp(value, clock)?);
                continue;
            }
            _ => {
                return Err(bad(format!(
                    "unknown query parameter '{key}'; known: place, sensor, ts"
                )));
            }
        };
        if value.is_empty()
            || value.len() > MAX_TAG_LEN
            || !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad(format!(
                "{key} must be 1-{MAX_TAG_LEN} characters of A-Z a-z 0-9 . _ -"
            )));
        }
        *slot = Some(value);
    }
    Ok(Query {
        place: place.unwrap_or(default_place),
        sensor,
        taken_at_ms,
    })
}

/// `ts=`: when the sensor took the reading, in Unix milliseconds. A reading sent again with the
/// same `ts` (after a 5.03 or a lost answer) lands on the same InfluxDB point, so it is stored
/// once however often it is sent. One older than the database keeps points is refused here:
/// InfluxDB would drop it, and no retry can change that.
fn timestamp(value: &str, clock: Clock) -> Result<i64, QueryError> {
    let now_ms = clock.now_ms;
    let ts: i64 = value.parse().map_err(|_| {
        (
            "bad_query",
            format!("ts must be Unix time in milliseconds, not '{value}'"),
        )
    })?;
    if ts < now_ms - MAX_PAST_MS || ts > now_ms + MAX_FUTURE_MS {
        return Err((
            "bad_query",
            format!(
                "ts {ts} is more than 7 days before or 1 minute after the server's clock ({now_ms})"
            ),
        ));
    }
    if let Some(retention_ms) = clock.retention_ms
        && ts < now_ms - retention_ms
    {
        return Err((
            "too_old",
            format!(
                "ts {ts} is older than the database keeps readings ({} h before the server's clock, {now_ms})",
                retention_ms / 3_600_000
            ),
        ));
    }
    Ok(ts)
}

fn parse_value(payload: &[u8], m: Measurement) -> Result<f64, (&'static str, String)> {
    let text = std::str::from_utf8(payload)
        .map_err(|_| ("not_a_number", "payload is not UTF-8 text".to_string()))?
        .trim();
    if text.is_empty() {
        return Err((
            "empty",
            format!(
                "empty payload; send the {} as plain text, e.g. 25.5",
                m.name()
            ),
        ));
    }
    let shown: String = text.chars().take(32).collect();
    let value: f64 = text
        .parse()
        .map_err(|_| ("not_a_number", format!("'{shown}' is not a number")))?;
    if !value.is_finite() {
        return Err(("not_finite", format!("'{shown}' is not a finite number")));
    }
    let (lo, hi, unit) = m.valid_range();
    if !(lo..=hi).contains(&value) {
        return Err((
            "out_of_range",
            format!(
                "{} {value} {unit} is outside the sensor's range {lo}..{hi} {unit}",
                m.name()
            ),
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::{CoapOption, MessageType, Packet};

    const NOW: i64 = 1_764_000_000_000;
    const CLOCK: Clock = Clock {
        now_ms: NOW,
        retention_ms: None,
    };

    fn request(method: RequestType, path: &str, query: &[&str], payload: &str) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        for q in query {
            p.add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        p.payload = payload.as_bytes().to_vec();
        p
    }

    /// `handle` as the server calls it: on the datagram a client sends. The datagram is leaked
    /// so that the decision, which borrows the reading's tags from it, can be returned.
    fn handle_packet(p: &Packet, default_place: &'static str) -> Action<'static> {
        handle_at(p, default_place, CLOCK)
    }

    fn handle_at(p: &Packet, default_place: &'static str, clock: Clock) -> Action<'static> {
        let bytes: &'static [u8] = Vec::leak(p.to_bytes().expect("encodable"));
        handle(
            &Message::parse(bytes).expect("well formed"),
            default_place,
            clock,
        )
    }

    fn post(path: &str, payload: &str) -> Action<'static> {
        handle_packet(&request(RequestType::Post, path, &[], payload), "room1")
    }

    fn rejected(a: Action) -> (ResponseType, &'static str) {
        match a {
            Action::Reply(r) => (r.code, r.reason.unwrap_or("none")),
            Action::Store(r) => panic!("stored {r:?}"),
        }
    }

    #[test]
    fn a_temperature_reading_is_stored_with_the_default_place() {
        assert_eq!(
            post("/sensors/dht/temperature", "25.5"),
            Action::Store(Reading {
                measurement: Measurement::Temperature,
                value: 25.5,
                place: "room1",
                sensor: None,
                taken_at_ms: None,
            })
        );
    }

    #[test]
    fn put_and_query_tags_are_accepted() {
        let req = request(
            RequestType::Put,
            "/sensors/dht/humidity",
            &["place=lab-2", "sensor=dht.7"],
            " 41.9\n",
        );
        let Action::Store(r) = handle_packet(&req, "room1") else {
            panic!("not stored")
        };
        assert_eq!((r.value, r.place), (41.9, "lab-2"));
        assert_eq!(r.sensor, Some("dht.7"));
        assert_eq!(r.stored().to_string(), "Humidity=41.9 saved successfully!");
    }

    #[test]
    fn a_sensor_timestamp_is_taken_within_bounds() {
        let with_ts = |ts: &str| {
            let q = format!("ts={ts}");
            handle_packet(
                &request(RequestType::Post, "/sensors/dht/temperature", &[&q], "20"),
                "room1",
            )
        };
        let Action::Store(r) = with_ts(&(NOW - 1000).to_string()) else {
            panic!("not stored")
        };
        assert_eq!(r.taken_at_ms, Some(NOW - 1000));
        for bad in [
            "yesterday",
            "1.5",
            &(NOW - 8 * 24 * 3600 * 1000).to_string(),
            &(NOW + 120_000).to_string(),
        ] {
            assert_eq!(
                rejected(with_ts(bad)),
                (ResponseType::BadRequest, "bad_query"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_sensor_timestamp_older_than_the_retention_is_refused() {
        let hour = 3_600_000;
        let clock = Clock {
            now_ms: NOW,
            retention_ms: Some(hour),
        };
        let with_ts = |ts: i64| {
            let q = format!("ts={ts}");
            handle_at(
                &request(RequestType::Post, "/sensors/dht/temperature", &[&q], "20"),
                "room1",
                clock,
            )
        };
        assert!(matches!(with_ts(NOW - hour + 1000), Action::Store(_)));
        assert_eq!(
            rejected(with_ts(NOW - hour - 1000)),
            (ResponseType::BadRequest, "too_old")
        );
    }

    #[test]
    fn bad_payloads_are_refused_with_their_reason() {
        let t = "/sensors/dht/temperature";
        assert_eq!(rejected(post(t, "")), (ResponseType::BadRequest, "empty"));
        assert_eq!(rejected(post(t, "  ")), (ResponseType::BadRequest, "empty"));
        assert_eq!(
            rejected(post(t, "warm")),
            (ResponseType::BadRequest, "not_a_number")
        );
        assert_eq!(
            rejected(post(t, "NaN")),
            (ResponseType::BadRequest, "not_finite")
        );
        assert_eq!(
            rejected(post(t, "inf")),
            (ResponseType::BadRequest, "not_finite")
        );
        assert_eq!(
            rejected(post(t, "500")),
            (ResponseType::BadRequest, "out_of_range")
        );
        assert_eq!(
            rejected(post("/sensors/dht/humidity", "-3")),
            (ResponseType::BadRequest, "out_of_range")
        );
        let bytes = handle_packet(
            &{
                let mut p = request(RequestType::Post, t, &[], "");
                p.payload = vec![0xff, 0xfe];
                p
            },
            "room1",
        );
        assert_eq!(rejected(bytes), (ResponseType::BadRequest, "not_a_number"));
    }

    #[test]
    fn unknown_paths_methods_and_queries_are_refused() {
        assert_eq!(
            rejected(post("/sensors/dht/pressure", "1")),
            (ResponseType::NotFound, "not_found")
        );
        assert_eq!(
            rejected(handle_packet(
                &request(RequestType::Get, "/sensors/dht/temperature", &[], ""),
                "r"
            )),
            (ResponseType::MethodNotAllowed, "method_not_allowed")
        );
        assert_eq!(
            rejected(handle_packet(
                &request(
                    RequestType::Post,
                    "/sensors/dht/temperature",
                    &["room=1"],
                    "1"
                ),
                "r"
            )),
            (ResponseType::BadRequest, "bad_query")
        );
        assert_eq!(
            rejected(handle_packet(
                &request(
                    RequestType::Post,
                    "/sensors/dht/temperature",
                    &["place=a b"],
                    "1"
                ),
                "r"
            )),
            (ResponseType::BadRequest, "bad_query")
        );
    }

    #[test]
    fn unknown_critical_options_are_refused_and_elective_ones_ignored() {
        let mut p = request(RequestType::Post, "/sensors/dht/temperature", &[], "20");
        p.add_option(CoapOption::Unknown(2048), vec![1]);
        assert!(
            matches!(handle_packet(&p, "r"), Action::Store(_)),
            "elective option"
        );
        p.add_option(CoapOption::Unknown(2049), vec![1]);
        assert_eq!(
            rejected(handle_packet(&p, "r")),
            (ResponseType::BadOption, "bad_option")
        );
    }

    #[test]
    fn any_content_format_but_text_is_refused() {
        let with_format = |cf: &[u8]| {
            let mut p = request(RequestType::Post, "/sensors/dht/temperature", &[], "20");
            p.add_option(CoapOption::ContentFormat, cf.to_vec());
            handle_packet(&p, "r")
        };
        assert!(
            matches!(with_format(&[]), Action::Store(_)),
            "0 is text/plain"
        );
        // 50 is JSON; 9999 is a format coap-lite does not know; five bytes is no format at all.
        for cf in [&[50][..], &[0x27, 0x0F], &[0, 0, 0, 0, 1]] {
            assert_eq!(
                rejected(with_format(cf)),
                (ResponseType::UnsupportedContentFormat, "content_format"),
                "{cf:?}"
            );
        }
    }

    #[test]
    fn well_known_core_lists_both_resources() {
        let Action::Reply(r) = handle_packet(
            &request(RequestType::Get, "/.well-known/core", &[], ""),
            "r",
        ) else {
            panic!("no reply")
        };
        assert_eq!(r.code, ResponseType::Content);
        assert_eq!(r.content_format, Some(ContentFormat::ApplicationLinkFormat));
        assert!(r.payload.contains("</sensors/dht/temperature>"));
        assert!(r.payload.contains("</sensors/dht/humidity>"));
    }
}
