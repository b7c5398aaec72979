//! A small InfluxDB 1.x HTTP client: `/ping`, `/query` and `/write` with line protocol.
//!
//! Written on reqwest rather than the `influxdb` crate because the writers need what that crate
//! hides: one pre-built body per batch (no per-point allocation), a typed split between errors
//! worth retrying (server down, 5xx) and errors that never heal (bad points, bad credentials),
//! and nanosecond timestamps chosen by the caller.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;

use crate::retry::RetryPolicy;

/// The HTTP client's error, for callers that build an [`InfluxClient`].
pub use reqwest::Error as HttpError;

/// Connection settings shared by every binary; the database name is each binary's own flag
/// because their defaults differ.
#[derive(clap::Args, Clone, Debug)]
pub struct InfluxArgs {
    /// Base URL of the InfluxDB 1.x HTTP API.
    #[arg(long, env = "INFLUX_URL", default_value = "http://127.0.0.1:8086")]
    pub influx_url: String,

    /// User name for InfluxDB HTTP authentication (none when empty).
    #[arg(long, env = "INFLUX_USERNAME", default_value = "")]
    pub influx_username: String,

    /// Password for InfluxDB HTTP authentication; prefer the environment variable over the flag
    /// so it does not show in the process list.
    #[arg(
        long,
        env = "INFLUX_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub influx_password: String,

    /// Timeout of one HTTP request to InfluxDB, in milliseconds.
    #[arg(long, env = "INFLUX_TIMEOUT_MS", default_value_t = 5000)]
    pub influx_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("InfluxDB at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("InfluxDB answered {status}: {body}")]
    Server { status: StatusCode, body: String },
    #[error("InfluxDB refused the credentials ({status}): {body}")]
    Auth { status: StatusCode, body: String },
    #[error("InfluxDB rejected the data ({status}): {body}")]
    Rejected { status: StatusCode, body: String },
    #[error("InfluxDB query failed: {0}")]
    Query(String),
    #[error("InfluxDB sent an answer that is not valid JSON: {0}")]
    Decode(#[from] serde_json::Error),
}

impl WriteError {
    /// Whether trying again later can succeed. Bad points and bad credentials never heal;
    /// a database that does not exist yet (404) may be created by someone else meanwhile.
    pub fn is_retryable(&self) -> bool {
        match self {
            WriteError::Unreachable { .. } | WriteError::Server { .. } => true,
            WriteError::Rejected { status, .. } => *status == StatusCode::NOT_FOUND,
            WriteError::Auth { .. } | WriteError::Query(_) | WriteError::Decode(_) => false,
        }
    }

    /// A stable, low-cardinality name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteError::Unreachable { .. } => "unreachable",
            WriteError::Server { .. } => "server",
            WriteError::Auth { .. } => "auth",
            WriteError::Rejected { .. } => "rejected",
            WriteError::Query(_) => "query",
            WriteError::Decode(_) => "decode",
        }
    }
}

/// One statement's result of `/query`.
#[derive(Debug, Default, Deserialize)]
pub struct QueryResult {
    #[serde(default)]
    pub series: Vec<Series>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Series {
    pub name: String,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<QueryResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct InfluxClient {
    http: reqwest::Client,
    base: String,
    db: String,
    auth: Option<(String, String)>,
}

impl InfluxClient {
    pub fn new(args: &InfluxArgs, db: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(args.influx_timeout_ms))
            .pool_max_idle_per_host(8)
            .build()?;
        let auth = (!args.influx_username.is_empty())
            .then(|| (args.influx_username.clone(), args.influx_password.clone()));
        Ok(InfluxClient {
            http,
            base: args.influx_url.trim_end_matches('/').to_string(),
            db: db.to_string(),
            auth,
        })
    }

    pub fn database(&self) -> &str {
        &self.db
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some((user, pass)) => req.basic_auth(user, Some(pass)),
            None => req,
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> WriteError {
        WriteError::Unreachable {
            url: self.base.clone(),
            source,
        }
    }

    /// `GET /ping`: true when InfluxDB answers 204.
    pub async fn ping(&self) -> bool {
        matches!(
            self.request(reqwest::Method::GET, "/ping").send().await,
            Ok(r) if r.status().is_success()
        )
    }

    /// Writes one body of line protocol (nanosecond timestamps) in a single request.
    pub async fn write(&self, body: impl Into<bytes::Bytes>) -> Result<(), WriteError> {
        let body: bytes::Bytes = body.into();
        let resp = self
            .request(reqwest::Method::POST, "/write")
            .query(&[("db", self.db.as_str()), ("precision", "ns")])
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        check_status(resp).await
    }

    /// `write` with retries of retryable failures, as the policy allows.
    pub async fn write_with_retry(
        &self,
        body: impl Into<bytes::Bytes>,
        policy: &RetryPolicy,
    ) -> Result<(), WriteError> {
        // `Bytes` clones share one buffer, so a retry does not copy the batch.
        let body: bytes::Bytes = body.into();
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let last = attempt >= policy.max_attempts || started.elapsed() >= policy.deadline;
            match self.write(body.clone()).await {
                Err(e) if !last && e.is_retryable() => {
                    let pause = policy.backoff(attempt);
                    tracing::debug!(error = %e, attempt, ?pause, "write failed, retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Runs InfluxQL against this client's database and returns one result per statement.
    /// Statements that change state (`CREATE`, `DROP`, ...) must use [`InfluxClient::execute`].
    pub async fn query(&self, q: &str) -> Result<Vec<QueryResult>, WriteError> {
        self.query_with(reqwest::Method::GET, q).await
    }

    /// Runs state-changing InfluxQL (sent as POST, as InfluxDB requires).
    pub async fn execute(&self, q: &str) -> Result<Vec<QueryResult>, WriteError> {
        self.query_with(reqwest::Method::POST, q).await
    }

    async fn query_with(
        &self,
        method: reqwest::Method,
        q: &str,
    ) -> Result<Vec<QueryResult>, WriteError> {
        let resp = self
            .request(method, "/query")
            .query(&[("db", self.db.as_str()), ("q", q), ("epoch", "ns")])
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(classify(status, body));
        }
        let parsed: QueryResponse = serde_json::from_str(&body)?;
        if let Some(e) = parsed.error {
            return Err(WriteError::Query(e));
        }
        if let Some(e) = parsed.results.iter().find_map(|r| r.error.clone()) {
            return Err(WriteError::Query(e));
        }
        Ok(parsed.results)
    }

    /// `CREATE DATABASE` for this client's database (idempotent in InfluxDB).
    pub async fn create_database(&self) -> Result<(), WriteError> {
        self.execute(&format!("CREATE DATABASE {}", quote_ident(&self.db)))
            .await
            .map(|_| ())
    }
}

/// Quotes an InfluxQL identifier: `"name"` with `"` and `\` escaped.
pub fn quote_ident(name: &str) -> String {
    quote(name, '"')
}

/// Quotes an InfluxQL string literal: `'value'` with `'` and `\` escaped.
pub fn quote_literal(value: &str) -> String {
    quote(value, '\'')
}

fn quote(s: &str, mark: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(mark);
    for c in s.chars() {
        if c == mark || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(mark);
    out
}

async fn check_status(resp: reqwest::Response) -> Result<(), WriteError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(classify(status, body))
}

fn classify(status: StatusCode, body: String) -> WriteError {
    let body = shorten(body.trim());
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => WriteError::Auth { status, body },
        s if s.is_server_error() => WriteError::Server { status, body },
        _ => WriteError::Rejected { status, body },
    }
}

/// An error body cut to its first and last characters: a "partial write" ends with the count
/// of points it dropped, which a reader of the error needs (see [`crate::verdict`]).
fn shorten(body: &str) -> String {
    const HEAD: usize = 384;
    const TAIL: usize = 128;
    let chars = body.chars().count();
    if chars <= HEAD + TAIL {
        return body.to_string();
    }
    let head: String = body.chars().take(HEAD).collect();
    let tail: String = body.chars().skip(chars - TAIL).collect();
    format!("{head} … {tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_error_body_keeps_its_end() {
        let body = format!("partial write: {} dropped=7", "x".repeat(2000));
        let e = classify(StatusCode::BAD_REQUEST, body);
        assert!(e.to_string().ends_with("dropped=7"), "{e}");
        assert!(e.to_string().len() < 700);
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident(r#"my"db"#), r#""my\"db""#);
        assert_eq!(quote_literal("o'clock"), r"'o\'clock'");
    }

    #[test]
    fn server_errors_are_retryable_and_bad_data_is_not() {
        assert!(classify(StatusCode::SERVICE_UNAVAILABLE, String::new()).is_retryable());
        assert!(!classify(StatusCode::BAD_REQUEST, "partial write".into()).is_retryable());
        assert!(!classify(StatusCode::UNAUTHORIZED, String::new()).is_retryable());
        assert!(classify(StatusCode::NOT_FOUND, "database not found".into()).is_retryable());
    }
}
