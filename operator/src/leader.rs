//! Leader election on a `coordination.k8s.io` Lease: only the holder runs the controller, so
//! two replicas never act at once. A replica that loses the lease stops reconciling and exits,
//! and comes back as a follower: simpler and safer than resuming with possibly stale caches.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Seconds a lease stays valid without renewal; a crashed leader is replaced after this.
const LEASE_SECONDS: u64 = 15;
/// Renew this long before expiry; also the clock skew tolerated between nodes.
const GRACE_SECONDS: u64 = 5;

pub type Trigger = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Shutdown was requested.
    Stopped,
    /// Another replica took the lease.
    LostLease,
}

pub fn random_identity() -> String {
    format!(
        "iot-operator-{}",
        iot_common::random::alphanumeric(12).to_lowercase()
    )
}

/// Waits for the lease (or `stop`), then runs `work` until `stop` or a lost lease; the future
/// handed to `work` resolves on either.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    namespace: &str,
    lease_name: &str,
    identity: &str,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
    work: F,
) -> Result<Ended, LeaseManagerError>
where
    F: FnOnce(Trigger) -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client, lease_name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await?;
    let (mut lease, task) = manager.watch().await;
    tracing::info!(
        identity,
        lease = lease_name,
        namespace,
        "waiting for the leader lease"
    );

    loop {
        if *lease.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = lease.changed() => {
                if changed.is_err() {
                    // The lease task ended; its result says why.
                    return task.await.map_or(Ok(Ended::LostLease), |r| r.map(|_| Ended::LostLease));
                }
            }
            // Discard the guard `wait_for` returns at once, so this future stays Send.
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                drop(lease);
                let _ = task.await;
                return Ok(Ended::Stopped);
            }
        }
    }

    tracing::info!(identity, "acquired the leader lease; reconciling");
    metrics.leader.set(1);
    let lost = Arc::new(AtomicBool::new(false));
    let trigger: Trigger = {
        let mut lease = lease.clone();
        let mut stop = stop.clone();
        let lost = lost.clone();
        Box::pin(async move {
            tokio::select! {
                _ = async { let _ = lease.wait_for(|held| !*held).await; } => {
                    lost.store(true, Ordering::Relaxed);
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {}
            }
        })
    };
    work(trigger).await;
    metrics.leader.set(0);
    // Dropping the last receiver makes the lease task release the lease, so a follower takes
    // over at once instead of after the lease expires.
    drop(lease);
    if let Ok(Err(err)) = task.await {
        tracing::warn!(error = %err, "could not release the lease cleanly");
    }
    if lost.load(Ordering::Relaxed) {
        tracing::warn!(identity, "lost the leader lease");
        Ok(Ended::LostLease)
    } else {
        Ok(Ended::Stopped)
    }
}
