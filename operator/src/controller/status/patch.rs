//! Writing the status: server-side apply of the `status` subresource, only when it changed.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::constants::FIELD_MANAGER;
use crate::crd::{IotMonitor, IotMonitorStatus};
use crate::error::concise;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
#[error("cannot update the IotMonitor status: {}", concise(.0))]
pub struct StatusError(#[source] pub kube::Error);

impl StatusError {
    pub fn category(&self) -> &'static str {
        "StatusUpdateFailed"
    }
}

/// Writes `status` unless the monitor already has it: an idle reconcile writes nothing.
pub async fn patch_status(
    client: &Client,
    metrics: &Metrics,
    monitor: &IotMonitor,
    status: &IotMonitorStatus,
) -> Result<(), StatusError> {
    if monitor.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<IotMonitor> =
        Api::namespaced(client.clone(), &monitor.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": IotMonitor::api_version(&()),
        "kind": IotMonitor::kind(&()),
        "status": status,
    });
    api.patch_status(
        &monitor.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(StatusError)?;
    metrics.record_write("IotMonitor", "status");
    Ok(())
}
