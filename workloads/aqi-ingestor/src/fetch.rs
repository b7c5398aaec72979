//! Getting a snapshot: over HTTP(S) with conditional GET and gzip, or from a file.
//!
//! Sensor.Community regenerates its snapshots every few minutes and asks clients to be good
//! citizens. A poll therefore sends the validators of the last snapshot it processed
//! (`If-None-Match` with its `ETag`, `If-Modified-Since` with its `Last-Modified`); an unchanged
//! snapshot comes back as `304 Not Modified` with no body and is neither downloaded nor
//! processed. Should a server ignore the conditional headers but send the same `ETag` (or, without
//! one, the same `Last-Modified`) again, the body is not read either. The validators are
//! remembered only once a snapshot has been processed completely, so a snapshot that failed
//! half-way is fetched again. Bodies are requested gzip-compressed (a whole-world file shrinks
//! about tenfold) and are streamed: never held in memory whole.
//!
//! A file source behaves the same way, with the file's size and modification time as validators.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{
    ETAG, HeaderMap, HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use std::io::Read as _;

use tokio::sync::mpsc;

/// The 24-hour means: what DAQI is defined on.
pub(crate) const URL_24H: &str = "https://data.sensor.community/static/v2/data.24h.json";
/// The 5-minute means, one record per sensor.
pub(crate) const URL_5MIN: &str = "https://data.sensor.community/static/v2/data.json";

/// Identifies the ingestor to the data provider, as Sensor.Community asks of API clients.
pub(crate) const USER_AGENT: &str = concat!(
    "iot-operator-aqi-ingestor/",
    env!("CARGO_PKG_VERSION"),
    " (+",
    env!("CARGO_PKG_REPOSITORY"),
    ")"
);

/// Bytes read from a file at a time. Up to three chunks are held (two queued, one being read),
/// so they are sized like a parse window rather than larger.
const FILE_CHUNK: usize = 256 * 1024;

/// Where snapshots come from: `24h`, `5min`, an `http(s)://` URL or a file path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Fetched over HTTP(S), conditionally (ETag, Last-Modified).
    Url(String),
    /// Read from a file, whenever its modification time changed.
    File(PathBuf),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "" => Err("the source is empty; use 24h, 5min, a URL or a file path".into()),
            "24h" => Ok(Source::Url(URL_24H.into())),
            "5min" => Ok(Source::Url(URL_5MIN.into())),
            s if s.starts_with("http://") || s.starts_with("https://") => {
                reqwest::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
                Ok(Source::Url(s.into()))
            }
            s => Ok(Source::File(PathBuf::from(
                s.strip_prefix("file://").unwrap_or(s),
            ))),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Url(u) => f.write_str(u),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a snapshot could not be fetched (each says what and where).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the fields are what the messages show
pub enum FetchError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request got no answer.
    #[error("GET {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was neither 200 nor 304.
    #[error("GET {url} answered {status}")]
    Status { url: String, status: StatusCode },
    /// The body broke off.
    #[error("reading the body of {url} failed: {source}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What identifies the version of a snapshot that was processed last.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
    file: Option<(u64, Option<SystemTime>)>,
}

impl Validators {
    fn from_headers(h: &HeaderMap) -> Self {
        Validators {
            etag: h.get(ETAG).cloned(),
            last_modified: h.get(LAST_MODIFIED).cloned(),
            file: None,
        }
    }

    /// Whether a 200 answer carries the same version as the one processed last.
    fn same_http_version(&self, new: &Validators) -> bool {
        match (&self.etag, &new.etag) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.last_modified.is_some() && self.last_modified == new.last_modified,
            _ => false,
        }
    }
}

/// The result of starting a poll's fetch.
#[derive(Debug)]
pub(crate) enum Fetch {
    /// The snapshot is the one processed last: nothing to do.
    NotModified,
    Body(Box<Download>),
}

/// A snapshot body being received.
#[derive(Debug)]
pub(crate) struct Download {
    inner: Inner,
    validators: Validators,
    bytes: u64,
}

#[derive(Debug)]
enum Inner {
    Http {
        url: String,
        response: reqwest::Response,
    },
    File {
        path: PathBuf,
        chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    },
}

/// Reads a file in a blocking thread, a few chunks ahead of the parser, so that reading and
/// parsing overlap. Stops when the receiver is dropped (the poll ended early).
fn read_ahead(mut file: std::fs::File) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut chunk = Vec::with_capacity(FILE_CHUNK);
            let message = match (&mut file).take(FILE_CHUNK as u64).read_to_end(&mut chunk) {
                // End of file: dropping the sender ends the stream.
                Ok(0) => return,
                Ok(_) => Ok(chunk),
                Err(e) => Err(e),
            };
            let failed = message.is_err();
            if tx.blocking_send(message).is_err() || failed {
                return;
            }
        }
    });
    rx
}

impl Download {
    /// Appends the next piece of the body to `buf`; `false` at its end.
    pub(crate) async fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, FetchError> {
        let before = buf.len();
        match &mut self.inner {
            Inner::Http { url, response } => {
                match response.chunk().await.map_err(|source| FetchError::Body {
                    url: url.clone(),
                    source,
                })? {
                    Some(bytes) => buf.extend_from_slice(&bytes),
                    None => return Ok(false),
                }
            }
            Inner::File { path, chunks } => match chunks.recv().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    return Err(FetchError::File {
                        path: path.clone(),
                        source,
                    });
                }
                None => return Ok(false),
            },
        }
        self.bytes += (buf.len() - before) as u64;
        Ok(true)
    }

    /// Body bytes received so far (after decompression).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What to remember once this body has been processed completely.
    pub(crate) fn validators(&self) -> &Validators {
        &self.validators
    }
}

/// Fetches snapshots from one source, remembering the version processed last.
#[derive(Debug)]
pub struct Fetcher {
    source: Source,
    http: reqwest::Client,
    last: Validators,
}

impl Fetcher {
    /// A fetcher of `source` whose requests give up after `timeout`.
    pub fn new(source: Source, timeout: Duration) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .build()
            .map_err(FetchError::Client)?;
        Ok(Fetcher {
            source,
            http,
            last: Validators::default(),
        })
    }

    /// Starts fetching the snapshot, unless it is the one processed last.
    pub(crate) async fn start(&self) -> Result<Fetch, FetchError> {
        match &self.source {
            Source::Url(url) => self.start_http(url).await,
            Source::File(path) => self.start_file(path).await,
        }
    }

    /// Remembers the version of a snapshot that has been processed completely.
    pub(crate) fn processed(&mut self, validators: &Validators) {
        self.last = validators.clone();
    }

    async fn start_http(&self, url: &str) -> Result<Fetch, FetchError> {
        let mut req = self.http.get(url);
        if let Some(etag) = &self.last.etag {
            req = req.header(IF_NONE_MATCH, etag.clone());
        }
        if let Some(lm) = &self.last.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm.clone());
        }
        let response = req.send().await.map_err(|source| FetchError::Request {
            url: url.to_string(),
            source,
        })?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetch::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            });
        }
        let validators = Validators::from_headers(response.headers());
        if self.last.same_http_version(&validators) {
            // The server ignored the conditions; dropping the response leaves the body unread.
            return Ok(Fetch::NotModified);
        }
        Ok(Fetch::Body(Box::new(Download {
            inner: Inner::Http {
                url: url.to_string(),
                response,
            },
            validators,
            bytes: 0,
        })))
    }

    async fn start_file(&self, path: &std::path::Path) -> Result<Fetch, FetchError> {
        let io = |source| FetchError::File {
            path: path.to_path_buf(),
            source,
        };
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let meta = file.metadata().await.map_err(io)?;
        let validators = Validators {
            file: Some((meta.len(), meta.modified().ok())),
            ..Validators::default()
        };
        if self.last.file.is_some() && self.last == validators {
            return Ok(Fetch::NotModified);
        }
        Ok(Fetch::Body(Box::new(Download {
            inner: Inner::File {
                path: path.to_path_buf(),
                chunks: read_ahead(file.into_std().await),
            },
            validators,
            bytes: 0,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_by_name_url_or_path() {
        assert_eq!("24h".parse(), Ok(Source::Url(URL_24H.into())));
        assert_eq!("5min".parse(), Ok(Source::Url(URL_5MIN.into())));
        assert_eq!(
            "http://127.0.0.1:8080/data.json".parse(),
            Ok(Source::Url("http://127.0.0.1:8080/data.json".into()))
        );
        assert_eq!(
            "/tmp/snap.json".parse(),
            Ok(Source::File("/tmp/snap.json".into()))
        );
        assert_eq!(
            "file:///tmp/snap.json".parse(),
            Ok(Source::File("/tmp/snap.json".into()))
        );
        assert!("".parse::<Source>().is_err());
        assert!("http://".parse::<Source>().is_err());
    }

    #[test]
    fn user_agent_names_the_project() {
        assert!(
            USER_AGENT.starts_with("iot-operator-aqi-ingestor/"),
            "{USER_AGENT}"
        );
        assert!(USER_AGENT.contains("iot-operator"), "{USER_AGENT}");
    }

    #[test]
    fn the_same_etag_or_last_modified_means_the_same_version() {
        let v = |etag: Option<&'static str>, lm: Option<&'static str>| Validators {
            etag: etag.map(HeaderValue::from_static),
            last_modified: lm.map(HeaderValue::from_static),
            file: None,
        };
        let lm = Some("Tue, 16 Apr 2019 14:25:00 GMT");
        assert!(v(Some("\"a\""), None).same_http_version(&v(Some("\"a\""), lm)));
        assert!(!v(Some("\"a\""), lm).same_http_version(&v(Some("\"b\""), lm)));
        assert!(v(None, lm).same_http_version(&v(None, lm)));
        assert!(!v(None, None).same_http_version(&v(None, None)));
        assert!(!Validators::default().same_http_version(&v(Some("\"a\""), None)));
    }
}
