//! Graceful shutdown: one flag that every task of a process waits on, set by SIGINT/SIGTERM
//! (what Kubernetes sends before it kills a pod) or by the process itself.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// A shutdown flag. Clones share it; once set it stays set.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A flag only the process sets (see [`Shutdown::trigger`]).
    pub fn new() -> Self {
        Shutdown {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// A flag that is also set on SIGINT or SIGTERM. Needs a running tokio runtime.
    pub fn on_signal() -> Self {
        let shutdown = Self::new();
        let set = shutdown.clone();
        tokio::spawn(async move {
            signal().await;
            set.trigger();
        });
        shutdown
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the flag is set; owns what it needs, so it can be handed to a task.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // The guard `wait_for` returns is dropped at once, so the future stays Send. An
            // error means the sender is gone, which cannot happen while `self.tx` lives.
            let _ = rx.wait_for(|&stop| stop).await;
        }
    }

    /// The flag as a watch receiver, for APIs that take one.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_flag_and_a_late_waiter_returns_at_once() {
        let shutdown = Shutdown::new();
        let waiter = tokio::spawn(shutdown.clone().wait());
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        waiter.await.expect("waiter");
        assert!(shutdown.is_triggered());
        shutdown.wait().await;
        assert!(*shutdown.receiver().borrow());
    }
}
