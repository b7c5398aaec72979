//! The HTTP side port of every binary: `/metrics` (OpenMetrics text), `/healthz` (the process
//! is alive) and `/readyz` (it can do its job, e.g. InfluxDB or the API server answers).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

/// A flag the binary flips as its dependencies come and go.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot bind HTTP {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    ready: Readiness,
}

pub fn router(registry: Arc<Registry>, ready: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, ready })
}

/// The side port, serving in a task of its own.
#[derive(Debug)]
pub struct SidePort {
    /// The bound address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl SidePort {
    /// Waits until the server has stopped (after the shutdown future resolved); an error it
    /// ended with is logged.
    pub async fn join(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP side port ended with an error"),
            Err(e) => tracing::warn!(error = %e, "HTTP side port task failed"),
        }
    }

    /// Stops the server at once, without waiting for requests in progress.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
/// Binding happens before this returns, so a taken port fails the start-up, not later.
pub async fn spawn(
    addr: SocketAddr,
    registry: Registry,
    ready: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SidePort, BindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let addr = listener.local_addr().unwrap_or(addr);
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let app = router(Arc::new(registry), ready);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(SidePort { addr, task })
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.to_string(),
        ),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn readyz_follows_the_flag_metrics_are_served_and_shutdown_stops_it() {
        let mut registry = Registry::default();
        let requests = Counter::<u64>::default();
        registry.register("requests", "Requests", requests.clone());
        requests.inc();
        let ready = Readiness::default();
        let shutdown = crate::Shutdown::new();
        let port = spawn(
            ([127, 0, 0, 1], 0).into(),
            registry,
            ready.clone(),
            shutdown.wait(),
        )
        .await
        .expect("bind");
        assert_ne!(port.addr.port(), 0);
        assert!(get(port.addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(port.addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.set(true);
        assert!(get(port.addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(port.addr, "/metrics").await;
        assert!(metrics.contains("requests_total 1"), "{metrics}");

        let addr = port.addr;
        shutdown.trigger();
        port.join().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_taken_port_fails_at_start_up_and_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = spawn(
            addr,
            Registry::default(),
            Readiness::default(),
            std::future::pending(),
        )
        .await
        .expect_err("the port is taken");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
