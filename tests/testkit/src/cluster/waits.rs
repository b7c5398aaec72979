//! Waiting on the cluster and running its command-line tools, with the cluster's error type.

use std::future::Future;
use std::process::Output;
use std::time::Duration;

use kube::Resource;
use kube::api::Api;
use kube::runtime::wait::{Condition, await_condition};

use super::ClusterError;
use crate::wait::{self, TimedOut};

impl From<TimedOut> for ClusterError {
    fn from(e: TimedOut) -> Self {
        ClusterError::Timeout {
            what: e.what,
            secs: e.secs,
            last: e.last,
        }
    }
}

/// Polls `check` every 250 ms until it returns `Ok`, for at most `timeout` ([`wait::until`]
/// with the cluster's error type). `Err(text)` means "not yet" and says what was seen, which
/// becomes part of the timeout error.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    Ok(wait::until_every(what, timeout, Duration::from_millis(250), check).await?)
}

/// Waits (with a watch, via kube-runtime's `await_condition`) until the named object satisfies
/// `condition`, for at most `timeout`; returns the object (`None` if the condition holds for a
/// missing object, e.g. `conditions::is_deleted`).
pub async fn wait_condition<K>(
    api: Api<K>,
    name: &str,
    condition: impl Condition<K>,
    timeout: Duration,
) -> Result<Option<K>, ClusterError>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let what = format!("{} {name}", K::kind(&Default::default()));
    match tokio::time::timeout(timeout, await_condition(api, name, condition)).await {
        Ok(Ok(object)) => Ok(object),
        Ok(Err(e)) => Err(ClusterError::Timeout {
            what,
            secs: timeout.as_secs(),
            last: format!("the watch failed: {e}"),
        }),
        Err(_) => Err(ClusterError::Timeout {
            what,
            secs: timeout.as_secs(),
            last: "the condition never held".into(),
        }),
    }
}

/// Runs a prepared command (from [`Cluster::kubectl`] or [`Cluster::helm`]) and returns its stdout;
/// a non-zero exit becomes an error carrying stderr.
pub async fn run(command: &mut tokio::process::Command) -> Result<String, ClusterError> {
    let std = command.as_std();
    let shown = std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ClusterError::Spawn {
            program: shown.clone(),
            source,
        })?;
    if !status.success() {
        return Err(ClusterError::Tool {
            command: shown,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}
