//! What an InfluxDB write's result means for the points in it: stored, stored in part, refused
//! for good, or not taken this time. One reading of InfluxDB's answers for every writer.
//!
//! InfluxDB 1.x answers a batch it stored in part with 400 "partial write: <why> dropped=N"
//! (points older than the retention policy, a `max-values-per-tag` or `max-series-per-database`
//! limit, a field type conflict). It has stored the other points, and does not say which ones it
//! dropped; a caller that must answer per point writes the batch again in parts (see
//! [`crate::batch`]), which is safe because a point written twice with the same series and time
//! is one point.

use std::borrow::Cow;

use reqwest::StatusCode;

use crate::influx::WriteError;

/// A write's result, read for its points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every point is stored.
    Stored,
    /// InfluxDB stored all but `dropped` points, and dropped those for good.
    Partial { dropped: u64 },
    /// The body was too large (413): the same points in smaller writes can be stored.
    TooLarge,
    /// No point is stored, and writing them again cannot change that (bad line protocol, every
    /// point dropped by a partial write).
    Refused,
    /// No point is stored, through no fault of the points (InfluxDB away or overloaded,
    /// credentials refused, no database yet): they can be written again later.
    Unavailable,
}

impl Verdict {
    /// Reads the result of writing `points` points.
    pub fn of(result: Result<(), &WriteError>, points: u64) -> Verdict {
        let e = match result {
            Ok(()) => return Verdict::Stored,
            Err(e) => e,
        };
        match e {
            WriteError::Rejected { status, body } => match *status {
                StatusCode::PAYLOAD_TOO_LARGE => Verdict::TooLarge,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::NOT_FOUND => Verdict::Unavailable,
                StatusCode::BAD_REQUEST if is_partial(body) => match dropped_points(body) {
                    Some(dropped) if dropped < points => Verdict::Partial { dropped },
                    Some(_) => Verdict::Refused,
                    // Stored in part, how much unknown: each part must be tried again.
                    None if points > 1 => Verdict::Partial { dropped: 1 },
                    None => Verdict::Refused,
                },
                _ => Verdict::Refused,
            },
            WriteError::Unreachable { .. }
            | WriteError::Server { .. }
            | WriteError::Auth { .. }
            | WriteError::Query(_)
            | WriteError::Decode(_) => Verdict::Unavailable,
        }
    }
}

/// Whether the same write, after a pause, can succeed: InfluxDB (or a proxy in front of it)
/// unreachable, failing (5xx) or asking to slow down (429), or the database not created yet.
/// Refused credentials leave the points [`Verdict::Unavailable`] too, but a pause does not heal
/// them: a person does.
pub fn retry_soon(e: &WriteError) -> bool {
    match e {
        WriteError::Rejected { status, .. } => {
            matches!(
                *status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::NOT_FOUND
            )
        }
        WriteError::Unreachable { .. } | WriteError::Server { .. } => true,
        WriteError::Auth { .. } | WriteError::Query(_) | WriteError::Decode(_) => false,
    }
}

fn is_partial(body: &str) -> bool {
    body.contains("partial write")
}

/// The `dropped=N` of an InfluxDB "partial write" error (its body, or an error message that
/// quotes it).
pub fn dropped_points(message: &str) -> Option<u64> {
    let rest = &message[message.rfind("dropped=")? + "dropped=".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// Why InfluxDB refused a point, in a few words fit for a client: the partial write's reason
/// without InfluxDB's framing (and JSON's escaped quotes), or the first words of its error.
pub fn refusal_reason(e: &WriteError) -> Cow<'_, str> {
    let body = match e {
        WriteError::Rejected { body, .. } => body.as_str(),
        _ => return Cow::Borrowed("InfluxDB refused it"),
    };
    let text = body
        .split_once("\"error\":\"")
        .map_or(body, |(_, rest)| rest.trim_end_matches(['"', '}']));
    let text = text
        .split_once("partial write: ")
        .map_or(text, |(_, why)| why);
    let text = text.rfind(" dropped=").map_or(text, |at| &text[..at]);
    let end = text
        .char_indices()
        .nth(MAX_REASON_CHARS)
        .map_or(text.len(), |(at, _)| at);
    let text = &text[..end];
    if text.contains("\\\"") {
        Cow::Owned(text.replace("\\\"", "\""))
    } else {
        Cow::Borrowed(text)
    }
}

/// Long enough for InfluxDB's reasons with the tag value that broke a limit.
const MAX_REASON_CHARS: usize = 160;

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: StatusCode, body: &str) -> WriteError {
        WriteError::Rejected {
            status,
            body: body.into(),
        }
    }

    const RETENTION: &str =
        r#"{"error":"partial write: points beyond retention policy dropped=10"}"#;
    const LIMIT: &str = r#"{"error":"partial write: max-values-per-tag limit exceeded (5/5): measurement=\"temperature\" tag=\"place\" value=\"p-77\" dropped=1"}"#;

    #[test]
    fn partial_writes_tell_how_many_points_were_dropped() {
        let e = rejected(StatusCode::BAD_REQUEST, RETENTION);
        assert_eq!(Verdict::of(Err(&e), 100), Verdict::Partial { dropped: 10 });
        assert_eq!(Verdict::of(Err(&e), 10), Verdict::Refused, "all dropped");
        let e = rejected(StatusCode::BAD_REQUEST, LIMIT);
        assert_eq!(Verdict::of(Err(&e), 3), Verdict::Partial { dropped: 1 });
        let e = rejected(StatusCode::BAD_REQUEST, "partial write: cut off");
        assert_eq!(Verdict::of(Err(&e), 3), Verdict::Partial { dropped: 1 });
        assert_eq!(Verdict::of(Err(&e), 1), Verdict::Refused);
    }

    #[test]
    fn other_answers_are_stored_refused_or_unavailable() {
        assert_eq!(Verdict::of(Ok(()), 5), Verdict::Stored);
        let bad = rejected(
            StatusCode::BAD_REQUEST,
            r#"{"error":"unable to parse 'x'"}"#,
        );
        assert_eq!(Verdict::of(Err(&bad), 5), Verdict::Refused);
        let big = rejected(StatusCode::PAYLOAD_TOO_LARGE, "");
        assert_eq!(Verdict::of(Err(&big), 5), Verdict::TooLarge);
        for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::NOT_FOUND] {
            assert_eq!(
                Verdict::of(Err(&rejected(status, "")), 5),
                Verdict::Unavailable
            );
        }
        let down = WriteError::Server {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: String::new(),
        };
        assert_eq!(Verdict::of(Err(&down), 5), Verdict::Unavailable);
        let auth = WriteError::Auth {
            status: StatusCode::UNAUTHORIZED,
            body: String::new(),
        };
        assert_eq!(Verdict::of(Err(&auth), 5), Verdict::Unavailable);
    }

    #[test]
    fn overload_and_outages_are_retried_soon_credentials_and_bad_data_are_not() {
        for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::NOT_FOUND] {
            assert!(retry_soon(&rejected(status, "")), "{status}");
        }
        let down = WriteError::Server {
            status: StatusCode::BAD_GATEWAY,
            body: String::new(),
        };
        assert!(retry_soon(&down));
        for status in [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE] {
            assert!(!retry_soon(&rejected(status, "")), "{status}");
        }
        let auth = WriteError::Auth {
            status: StatusCode::FORBIDDEN,
            body: String::new(),
        };
        assert!(!retry_soon(&auth));
    }

    #[test]
    fn dropped_points_are_read_from_a_partial_write_error() {
        let e = r#"InfluxDB rejected the data (400 Bad Request): {"error":"partial write: field type conflict: input field \"humidity\" on measurement \"air_quality\" is type float, already exists as type string dropped=3"}"#;
        assert_eq!(dropped_points(e), Some(3));
        assert_eq!(dropped_points("unable to parse"), None);
    }

    #[test]
    fn the_reason_is_influxdbs_own_words_without_its_framing() {
        let e = rejected(StatusCode::BAD_REQUEST, RETENTION);
        assert_eq!(refusal_reason(&e), "points beyond retention policy");
        let e = rejected(StatusCode::BAD_REQUEST, LIMIT);
        assert!(
            refusal_reason(&e).starts_with("max-values-per-tag limit exceeded (5/5)"),
            "{}",
            refusal_reason(&e)
        );
        assert!(!refusal_reason(&e).contains("dropped="));
        assert!(
            refusal_reason(&e).contains(r#"tag="place" value="p-77""#),
            "{}",
            refusal_reason(&e)
        );
    }
}
