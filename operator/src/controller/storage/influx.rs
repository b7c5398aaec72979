//! One InfluxQL request to a monitor's InfluxDB: the statistics the forecast needs, as its
//! admin (`SHOW STATS` and `SHOW SHARDS` need admin rights). On hyper's client, which kube
//! already links, rather than a second HTTP stack in the operator.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::stats::QUERY;

/// A request takes at most this long, answer included: a stuck InfluxDB delays the monitor's
/// reconcile by no more.
const TIMEOUT: Duration = Duration::from_secs(5);
/// An answer larger than this is not read (SHOW STATS is a few kilobytes per shard).
const MAX_ANSWER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum InfluxError {
    #[error("InfluxDB at {0} did not answer within {TIMEOUT:?}")]
    Timeout(String),
    #[error("cannot reach InfluxDB at {0}: {1}")]
    Unreachable(String, String),
    #[error("InfluxDB at {0} answered {1}")]
    Status(String, http::StatusCode),
    #[error("cannot read InfluxDB's answer (at most {MAX_ANSWER} bytes): {0}")]
    Answer(String),
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
}

/// The operator's HTTP client for InfluxDB (plain HTTP: the stack's InfluxDB listens on its
/// pod network only); one per process, its connections pooled.
#[derive(Clone)]
pub(crate) struct InfluxClient {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for InfluxClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        Self {
            http: Client::builder(TokioExecutor::new())
                // An idle connection per monitor would add up at a thousand monitors, and a
                // measurement comes every few minutes: not worth keeping.
                .pool_max_idle_per_host(0)
                .build(connector),
        }
    }
}

impl InfluxClient {
    /// The answer to `SHOW DIAGNOSTICS; SHOW SHARDS; SHOW STATS`, as `user`.
    pub(crate) async fn stats(
        &self,
        host: &str,
        port: i32,
        user: &str,
        password: &str,
    ) -> Result<Bytes, InfluxError> {
        let address = format!("{host}:{port}");
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let request = http::Request::get(format!("http://{address}/query?q={QUERY}"))
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Empty::new())?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| InfluxError::Unreachable(address.clone(), e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(InfluxError::Status(address.clone(), status));
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| InfluxError::Answer(e.to_string()))?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| InfluxError::Timeout(address.clone()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable_not_a_hang() {
        // Port 1 on loopback: nothing listens there.
        let error = InfluxClient::default()
            .stats("127.0.0.1", 1, "u", "p")
            .await
            .unwrap_err();
        assert!(matches!(error, InfluxError::Unreachable(..)), "{error}");
    }
}
