//! The API server client: kube's default stack (kubeconfig or in-cluster config, TLS, auth),
//! with a bound on the requests in flight.
//!
//! The client speaks HTTP/1.1, so every request in flight holds a connection of its own, each
//! with its TLS state and buffers. Reconciles at once, each applying a wave of children at
//! once, open a connection per request unless something bounds them, and at scale their buffers
//! were a large share of the operator's heap; too low a bound costs time instead (the
//! measurements are in CHANGELOG.md, 2026-12-01). Past the bound, requests wait in the client's
//! queue instead, and the API server (the bottleneck at scale) sees the same work.

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::limit::ConcurrencyLimitLayer;

/// Requests in flight at most, by default: more than the controller's concurrency, so a
/// reconcile's wave is rarely held back, and few enough that connections stay few.
pub const DEFAULT_MAX_IN_FLIGHT: u16 = 64;

/// A client from the ambient configuration (kubeconfig, or the pod's service account), sending
/// at most `max_in_flight` requests at once.
pub async fn connect(max_in_flight: usize) -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    with_config(config, max_in_flight)
}

/// A client for `config` sending at most `max_in_flight` requests at once. A watch counts only
/// until its response starts: its stream then holds no slot.
pub fn with_config(config: Config, max_in_flight: usize) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&ConcurrencyLimitLayer::new(max_in_flight.max(1)))
        .build())
}
