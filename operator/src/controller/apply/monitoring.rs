//! The ServiceMonitor and PrometheusRule (see `desired::prometheus`): server-side applied as
//! dynamic objects, only while the cluster has their CRDs. They are not watched, so the known
//! state of the typed children does not cover them; a memo of what this process last wrote
//! (content hash per object, or "deleted") keeps a reconcile with nothing to change from
//! sending anything. A hand-edit is repaired on the operator's next start.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};

use super::ApplyError;
use crate::constants::FIELD_MANAGER;
use crate::controller::desired::prometheus::{
    Monitoring, prometheus_rule_resource, service_monitor_resource,
};
use crate::controller::hash::content_hash_value;
use crate::controller::validate::ValidatedMonitor;
use crate::metrics::Metrics;

/// What this process last did to each monitoring object: `Some(hash)` written, `None` deleted.
#[derive(Debug, Default)]
pub(crate) struct MonitoringMemo(Mutex<HashMap<String, Option<u64>>>);

impl MonitoringMemo {
    fn get(&self, key: &str) -> Option<Option<u64>> {
        self.0.lock().ok()?.get(key).copied()
    }

    /// Forgets everything: after the CRDs went (and their objects with them) or came back.
    pub(crate) fn clear(&self) {
        if let Ok(mut memo) = self.0.lock() {
            memo.clear();
        }
    }

    fn set(&self, key: String, value: Option<u64>) {
        if let Ok(mut memo) = self.0.lock() {
            memo.insert(key, value);
        }
    }
}

/// Applies the wanted monitoring objects and deletes the unwanted ones; returns the writes.
/// Does nothing when `monitoring` is `None` (no CRDs: nothing to apply, nothing to delete).
pub(crate) async fn apply(
    client: &Client,
    model: &ValidatedMonitor,
    monitoring: Option<&Monitoring>,
    memo: &MonitoringMemo,
    metrics: &Metrics,
) -> Result<u32, ApplyError> {
    let Some(monitoring) = monitoring else {
        return Ok(0);
    };
    let rule_name = format!("{}-alerts", model.names.instance);
    let mut writes = 0;
    for (kind, resource, name, object) in [
        (
            "ServiceMonitor",
            service_monitor_resource(),
            model.names.metrics.clone(),
            Some(&monitoring.service_monitor),
        ),
        (
            "PrometheusRule",
            prometheus_rule_resource(),
            rule_name,
            monitoring.rule.as_ref(),
        ),
    ] {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &model.namespace, &resource);
        let key = format!("{}/{kind}/{name}", model.namespace);
        if apply_one(&api, kind, &resource, &name, object, &key, memo).await? {
            metrics.record_write(kind, if object.is_some() { "apply" } else { "delete" });
            writes += 1;
        }
    }
    Ok(writes)
}

async fn apply_one(
    api: &Api<DynamicObject>,
    kind: &'static str,
    resource: &ApiResource,
    name: &str,
    object: Option<&DynamicObject>,
    key: &str,
    memo: &MonitoringMemo,
) -> Result<bool, ApplyError> {
    match object {
        Some(object) => {
            let mut object = object.clone();
            object.types = Some(kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            });
            let json =
                serde_json::to_string(&object).map_err(|e| ApplyError::Serialize(kind, e))?;
            let hash = content_hash_value([json.as_str()]);
            if memo.get(key) == Some(Some(hash)) {
                return Ok(false);
            }
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(name, &params, &Patch::Apply(&object))
                .await
                .map_err(|source| ApplyError::Apply {
                    kind,
                    name: name.to_owned(),
                    source,
                })?;
            memo.set(key.to_owned(), Some(hash));
            Ok(true)
        }
        None => {
            if memo.get(key) == Some(None) {
                return Ok(false);
            }
            let deleted = match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => true,
                Err(kube::Error::Api(status)) if status.code == 404 => false,
                Err(source) => {
                    return Err(ApplyError::Delete {
                        kind,
                        name: name.to_owned(),
                        source,
                    });
                }
            };
            memo.set(key.to_owned(), None);
            Ok(deleted)
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::controller::desired::prometheus;
    use crate::controller::fixtures::model;
    use crate::controller::mock_api::MockApi;

    fn with_crds(spec: &str) -> ValidatedMonitor {
        let mut m = model(spec);
        m.prometheus_operator = true;
        m
    }

    async fn run(client: &Client, m: &ValidatedMonitor, memo: &MonitoringMemo) -> u32 {
        let metrics = Metrics::register(&mut Registry::default());
        let monitoring = prometheus::build(m);
        apply(client, m, monitoring.as_ref(), memo, &metrics)
            .await
            .expect("applied")
    }

    #[tokio::test]
    async fn applied_once_then_nothing_sent_until_it_changes() {
        let (client, api) = MockApi::start();
        let memo = MonitoringMemo::default();
        let m = with_crds("{}");
        assert_eq!(run(&client, &m, &memo).await, 2);
        let paths: Vec<(String, String)> = api.writes();
        assert_eq!(
            paths,
            [
                ("servicemonitors".to_owned(), "lab-metrics".to_owned()),
                ("prometheusrules".to_owned(), "lab-alerts".to_owned())
            ]
        );
        api.clear_calls();
        assert_eq!(run(&client, &m, &memo).await, 0);
        assert!(api.calls().is_empty(), "{:?}", api.calls());
        // Alerting off: the rule is deleted, once.
        let off = with_crds("alerts: {enabled: false}");
        assert_eq!(run(&client, &off, &memo).await, 1);
        assert_eq!(
            api.writes(),
            [("prometheusrules".to_owned(), "lab-alerts".to_owned())]
        );
        api.clear_calls();
        assert_eq!(run(&client, &off, &memo).await, 0);
        assert!(api.calls().is_empty(), "{:?}", api.calls());
    }

    #[tokio::test]
    async fn without_the_crds_nothing_is_sent() {
        let (client, api) = MockApi::start();
        let memo = MonitoringMemo::default();
        assert_eq!(run(&client, &model("{}"), &memo).await, 0);
        assert!(api.calls().is_empty());
    }
}
