//! What the Sensor.Community API serves: records and snapshots as it writes them, and a local
//! HTTP server that serves scripted snapshots the way it does (ETag, Last-Modified, 304, gzip)
//! and logs every request.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

/// Where a test sensor stands: country, coordinates as the feed writes them (empty strings for
/// none), and whether it is indoors.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub country: &'a str,
    pub lat: &'a str,
    pub lon: &'a str,
    pub indoor: bool,
}

/// London, outdoors: where [`record`] puts its sensors.
pub const LONDON: Place<'static> = Place {
    country: "GB",
    lat: "51.500",
    lon: "-0.120",
    indoor: false,
};

/// A record in the current v2 format, as the API sends it (numbers as strings), in London.
pub fn record(sensor: u64, time: &str, values: &[(&str, &str)]) -> String {
    record_at(sensor, time, LONDON, values)
}

/// A record of `sensor` at `place`.
pub fn record_at(sensor: u64, time: &str, place: Place<'_>, values: &[(&str, &str)]) -> String {
    let values: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            format!(
                r#"{{"id":{},"value":"{v}","value_type":"{t}"}}"#,
                sensor * 100 + i as u64
            )
        })
        .collect();
    let Place {
        country,
        lat,
        lon,
        indoor,
    } = place;
    format!(
        r#"{{"id":{sensor}0,"sampling_rate":null,"timestamp":"{time}","location":{{"id":{loc},"latitude":"{lat}","longitude":"{lon}","altitude":"11.0","country":"{country}","exact_location":0,"indoor":{indoor}}},"sensor":{{"id":{sensor},"pin":"1","sensor_type":{{"id":14,"name":"SDS011","manufacturer":"Nova Fitness"}}}},"sensordatavalues":[{}]}}"#,
        values.join(","),
        loc = sensor + 50_000,
        indoor = u8::from(indoor),
    )
}

/// A PM record: `P1` (PM10) and `P2` (PM2.5).
pub fn pm(sensor: u64, time: &str, p1: &str, p2: &str) -> String {
    record(sensor, time, &[("P1", p1), ("P2", p2)])
}

pub fn snapshot(records: &[String]) -> String {
    format!("[{}]", records.join(",\n"))
}

/// A deterministic synthetic snapshot of `n` records (PM and weather sensors, some repeats,
/// a little junk), several windows long for large `n`.
pub fn synthetic(n: u64) -> String {
    let mut records = Vec::with_capacity(n as usize);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..n {
        let r = next();
        let sensor = if r % 10 == 0 {
            1000 + r % (i + 1)
        } else {
            1000 + i
        };
        let time = format!("2024-01-15 10:{:02}:{:02}", (r >> 8) % 60, (r >> 16) % 60);
        let v = |k: u64| format!("{}.{:02}", (r >> k) % 120, (r >> (k + 8)) % 100);
        let rec = match r % 7 {
            0 => record(
                sensor,
                &time,
                &[("temperature", "-3.10"), ("humidity", &v(24))],
            ),
            1 => record(sensor, &time, &[("P1", "1999.90"), ("P2", &v(24))]),
            2 => record(sensor, &time, &[("P1", "nan"), ("P2", "")]),
            _ => pm(sensor, &time, &v(24), &v(40)),
        };
        records.push(rec);
    }
    snapshot(&records)
}

/// How the snapshot server answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            body: body.into(),
            etag: None,
            last_modified: None,
        }
    }

    pub fn etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_string());
        self
    }

    pub fn last_modified(mut self, lm: &str) -> Self {
        self.last_modified = Some(lm.to_string());
        self
    }

    pub fn status(status: u16) -> Self {
        Reply {
            status,
            body: b"upstream trouble".to_vec(),
            etag: None,
            last_modified: None,
        }
    }
}

#[derive(Debug, Default)]
struct Script {
    /// Served in turn; the last one again and again.
    replies: Vec<Reply>,
    next: usize,
    /// Answer 304 to a matching If-None-Match / If-Modified-Since.
    honour_conditions: bool,
    requests: Vec<HeaderMap>,
    bytes_sent: usize,
}

/// A local HTTP server playing the Sensor.Community API.
pub struct SnapshotServer {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl SnapshotServer {
    pub async fn start(replies: Vec<Reply>) -> Self {
        let script = Arc::new(Mutex::new(Script {
            replies,
            honour_conditions: true,
            ..Script::default()
        }));
        let app = axum::Router::new()
            .route("/static/v2/data.24h.json", axum::routing::get(serve))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the snapshot server");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SnapshotServer { addr, script, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/static/v2/data.24h.json", self.addr)
    }

    pub fn set(&self, replies: Vec<Reply>) {
        let mut s = self.script.lock().expect("script");
        s.replies = replies;
        s.next = 0;
    }

    pub fn honour_conditions(&self, yes: bool) {
        self.script.lock().expect("script").honour_conditions = yes;
    }

    /// The headers of every request so far.
    pub fn requests(&self) -> Vec<HeaderMap> {
        self.script.lock().expect("script").requests.clone()
    }

    /// Body bytes sent so far (as on the wire).
    pub fn bytes_sent(&self) -> usize {
        self.script.lock().expect("script").bytes_sent
    }
}

impl Drop for SnapshotServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn serve(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap) -> Response {
    let mut s = script.lock().expect("script");
    s.requests.push(headers.clone());
    let i = s.next.min(s.replies.len().saturating_sub(1));
    s.next += 1;
    let Some(reply) = s.replies.get(i).cloned() else {
        return respond(StatusCode::NOT_FOUND, Vec::new());
    };
    let mut builder = Response::builder();
    if let Some(etag) = &reply.etag {
        builder = builder.header(header::ETAG, etag);
    }
    if let Some(lm) = &reply.last_modified {
        builder = builder.header(header::LAST_MODIFIED, lm);
    }
    let inm = header(&headers, "if-none-match");
    let ims = header(&headers, "if-modified-since");
    let unchanged = match (inm, &reply.etag, ims, &reply.last_modified) {
        (Some(a), Some(b), _, _) => a == b,
        (None, _, Some(a), Some(b)) => a == b,
        _ => false,
    };
    if s.honour_conditions && reply.status == 200 && unchanged {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("response");
    }
    let accepts_gzip = header(&headers, "accept-encoding").is_some_and(|v| v.contains("gzip"));
    let body = if accepts_gzip && reply.status == 200 {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&reply.body).expect("gzip");
        gz.finish().expect("gzip")
    } else {
        reply.body.clone()
    };
    s.bytes_sent += body.len();
    builder
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("response")
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .body(Body::from(body))
        .expect("response")
}
