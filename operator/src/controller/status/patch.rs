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
pub(crate) struct StatusError(#[source] pub(crate) kube::Error);

impl StatusError {
    pub(crate) fn category(&self) -> &'static str {
        "StatusUpdateFailed"
    }
}

/// Writes `status` unless the monitor already has it: an idle reconcile writes nothing.
pub(crate) async fn patch_status(
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

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::controller::fixtures::monitor;
    use crate::controller::mock_api::MockApi;

    const PATH: &str = "/apis/iot.operator.dev/v1alpha1/namespaces/iot/iotmonitors/lab";

    fn fixture() -> (Client, MockApi, Metrics, IotMonitor) {
        let (client, api) = MockApi::start();
        let monitor = monitor("{}");
        api.put(PATH, serde_json::to_value(&monitor).expect("json"));
        (
            client,
            api,
            Metrics::register(&mut Registry::default()),
            monitor,
        )
    }

    fn with_generation(generation: i64) -> IotMonitorStatus {
        IotMonitorStatus {
            observed_generation: Some(generation),
            ..IotMonitorStatus::default()
        }
    }

    #[tokio::test]
    async fn a_changed_status_is_applied_to_the_status_subresource() {
        let (client, api, metrics, monitor) = fixture();
        patch_status(&client, &metrics, &monitor, &with_generation(1))
            .await
            .expect("patched");
        let calls = api.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].method, http::Method::PATCH);
        assert_eq!(calls[0].path, format!("{PATH}/status"));
        assert!(calls[0].query.contains("fieldManager=iot-operator"));
        assert!(calls[0].query.contains("force=true"));
        let stored = api.get(PATH).expect("monitor");
        assert_eq!(stored["status"]["observedGeneration"], 1);
    }

    #[tokio::test]
    async fn an_unchanged_status_is_not_written() {
        let (client, api, metrics, mut monitor) = fixture();
        monitor.status = Some(with_generation(1));
        patch_status(&client, &metrics, &monitor, &with_generation(1))
            .await
            .expect("nothing to do");
        assert!(api.calls().is_empty(), "{:?}", api.calls());
    }

    #[tokio::test]
    async fn a_refused_status_write_is_a_status_error() {
        let (client, api, metrics, monitor) = fixture();
        api.remove(PATH);
        let err = patch_status(&client, &metrics, &monitor, &with_generation(1))
            .await
            .expect_err("the monitor is gone");
        assert_eq!(err.category(), "StatusUpdateFailed");
        assert!(err.to_string().contains("NotFound"), "{err}");
    }
}
