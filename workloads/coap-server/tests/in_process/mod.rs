//! coap-server run in-process on a loopback port, writing to an in-memory sink that can be told
//! to be slow, to be away, or to refuse some lines as InfluxDB refuses points in a partial write.
//! Tests talk raw CoAP to it with `iot_testkit::coap::RawClient`, which blocks: they run on the
//! multi-threaded runtime, so the server's tasks go on meanwhile.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use coap_server::{Config, Server};
use iot_common::batch::{Bytes, Sink};
use iot_common::http::Readiness;
use iot_common::{RetryPolicy, Shutdown, WriteError};
use prometheus_client::registry::Registry;
use reqwest::StatusCode;
use tokio::task::JoinHandle;

/// A sink that keeps what it stores, as InfluxDB does: one point per line, a line written again
/// (the writer's halves after a partial write) stored once.
#[derive(Clone, Default)]
pub struct FakeSink(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    lines: Vec<String>,
    seen: HashSet<String>,
    delay: Duration,
    away: bool,
    refuse: Vec<String>,
    writes: usize,
}

impl FakeSink {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every write takes `delay` before it is answered.
    pub fn delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// While away, every write fails as when InfluxDB does not answer (retryable, 503).
    pub fn away(&self, away: bool) {
        self.state().away = away;
    }

    /// Lines containing `text` are dropped, and the write answered with a partial write.
    pub fn refuse(&self, text: &str) {
        self.state().refuse.push(text.to_owned());
    }

    /// The lines stored, in the order they were stored.
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// Lines stored that contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.state()
            .lines
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Write requests it was sent.
    pub fn writes(&self) -> usize {
        self.state().writes
    }

    fn store(&self, body: &[u8]) -> Result<(), WriteError> {
        let mut state = self.state();
        state.writes += 1;
        if state.away {
            return Err(WriteError::Server {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: "the fake sink is away".into(),
            });
        }
        let text = String::from_utf8_lossy(body);
        let mut dropped = 0;
        for line in text.lines() {
            if state.refuse.iter().any(|r| line.contains(r.as_str())) {
                dropped += 1;
            } else if state.seen.insert(line.to_owned()) {
                state.lines.push(line.to_owned());
            }
        }
        if dropped == 0 {
            return Ok(());
        }
        Err(WriteError::Rejected {
            status: StatusCode::BAD_REQUEST,
            body: format!(
                r#"{{"error":"partial write: refused by the fake sink dropped={dropped}"}}"#
            ),
        })
    }
}

impl Sink for FakeSink {
    async fn write_batch(&self, body: Bytes, _policy: &RetryPolicy) -> Result<(), WriteError> {
        let delay = self.state().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.store(&body)
    }
}

/// A server in this process, on a free loopback port.
pub struct InProcess {
    /// Where it takes plaintext CoAP (port 0 when plaintext is closed).
    pub coap: SocketAddr,
    /// Where it takes DTLS, when on.
    pub coaps: Option<SocketAddr>,
    pub sink: FakeSink,
    registry: Registry,
    stop: Shutdown,
    task: JoinHandle<bool>,
}

/// The binary tests' settings: Max-Age 1 s.
pub fn config() -> Config {
    Config {
        retry_after_secs: 1,
        ..Config::default()
    }
}

impl InProcess {
    /// Starts a server with `config`, writing to a new sink.
    pub fn start(config: Config) -> Self {
        Self::start_with(FakeSink::default(), config)
    }

    /// Starts a server with `config`, writing to `sink`.
    pub fn start_with(sink: FakeSink, config: Config) -> Self {
        let mut registry = Registry::default();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = Server::bind(
            loopback,
            sink.clone(),
            config,
            &mut registry,
            Readiness::default(),
        )
        .expect("bind a loopback port");
        let coap = server
            .local_addr()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let coaps = server.dtls_addr();
        let stop = Shutdown::new();
        let task = tokio::spawn(server.run(stop.wait(), Duration::from_secs(10)));
        InProcess {
            coap,
            coaps,
            sink,
            registry,
            stop,
            task,
        }
    }

    /// The metrics, as `/metrics` shows them.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encode metrics");
        text
    }

    /// Stops taking requests and writes what is queued; whether all of it was written.
    pub async fn stop(self) -> bool {
        self.stop.trigger();
        self.task.await.expect("server task")
    }
}

/// A counter's value (0 when it is not shown).
pub fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// The sum of a counter family over its labels.
pub fn family_sum(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
