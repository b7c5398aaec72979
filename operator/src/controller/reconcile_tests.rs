//! The reconcile driver without a cluster: `reconcile_monitor`, `reconcile` and
//! `error_policy` against the mock API server, one behaviour each.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::json;

use super::fixtures::{MONITOR_PATH, context_with};
use super::mock_api::MockApi;
use super::*;

fn stored(api: &MockApi) -> IotMonitor {
    serde_json::from_value(api.get(MONITOR_PATH).expect("monitor stored")).expect("monitor")
}

fn condition(monitor: &IotMonitor, type_: &str) -> Condition {
    monitor
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .cloned()
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn status_write() -> Vec<(String, String)> {
    vec![("iotmonitors/status".to_owned(), "lab".to_owned())]
}

#[tokio::test]
async fn a_paused_monitor_gets_its_status_and_nothing_else() {
    let (ctx, api, monitor) = context_with("{paused: true}");
    let action = reconcile_monitor(&monitor, &ctx).await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    assert_eq!(api.writes(), status_write());
    let progressing = condition(&stored(&api), status::PROGRESSING);
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "Paused")
    );
}

#[tokio::test]
async fn an_invalid_spec_writes_no_child_and_waits_for_the_user() {
    // A node port on a ClusterIP Service: the API server's CEL rule refuses it too, but the
    // operator must not trust that every client went through it.
    let (ctx, api, monitor) = context_with("{coap: {nodePort: 30683}}");
    let monitor = Arc::new(monitor);
    let error = reconcile(monitor.clone(), ctx.clone())
        .await
        .expect_err("invalid");
    assert_eq!(error.category(), "InvalidSpec");
    assert!(error.needs_user_action());
    assert!(
        api.writes()
            .iter()
            .all(|(resource, _)| resource == "iotmonitors/status" || resource == "events"),
        "{:?}",
        api.writes()
    );
    let degraded = condition(&stored(&api), status::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        degraded.message.contains("nodePort"),
        "{}",
        degraded.message
    );
    let action = error_policy(monitor, &error, ctx);
    assert_eq!(action, Action::requeue(context::MAX_BACKOFF));
}

#[tokio::test]
async fn an_apply_failure_backs_off_longer_each_time_until_a_success() {
    let (ctx, api, monitor) = context_with("{}");
    api.refuse_writes_to(Some("deployments"));
    let monitor = Arc::new(monitor);
    let mut delays = Vec::new();
    for _ in 0..3 {
        let error = reconcile(monitor.clone(), ctx.clone())
            .await
            .expect_err("refused");
        assert_eq!(error.category(), "ApplyFailed");
        assert!(!error.needs_user_action());
        delays.push(error_policy(monitor.clone(), &error, ctx.clone()));
    }
    let secs = |s| Action::requeue(Duration::from_secs(s));
    assert_eq!(delays, [secs(5), secs(10), secs(20)]);
    let degraded = condition(&stored(&api), status::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "ApplyFailed")
    );

    // The writes go through again: the next failure starts the backoff afresh.
    api.refuse_writes_to(None);
    reconcile(Arc::new(stored(&api)), ctx.clone())
        .await
        .expect("reconciled");
    assert_eq!(
        condition(&stored(&api), status::DEGRADED).status,
        "False",
        "a success clears Degraded"
    );
    api.refuse_writes_to(Some("deployments"));
    // A changed spec (generation) makes the operator apply, and fail, again.
    let mut changed = stored(&api);
    changed.spec.coap.batch.size += 1;
    changed.metadata.generation = Some(2);
    let error = reconcile(Arc::new(changed.clone()), ctx.clone())
        .await
        .expect_err("refused again");
    assert_eq!(error_policy(Arc::new(changed), &error, ctx), secs(5));
}

#[tokio::test]
async fn a_status_only_change_writes_the_status_and_no_child() {
    let (ctx, api, monitor) = context_with("{}");
    reconcile_monitor(&monitor, &ctx)
        .await
        .expect("first reconcile");
    assert!(
        api.writes().len() > 10,
        "the first reconcile builds the stack"
    );

    // The world moves: InfluxDB's StatefulSet reports its replica ready.
    let path = "/apis/apps/v1/namespaces/iot/statefulsets/lab-influxdb";
    let mut influxdb = api.get(path).expect("StatefulSet applied");
    influxdb["status"] = json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1});
    api.put(path, influxdb);
    api.clear_calls();
    reconcile_monitor(&stored(&api), &ctx)
        .await
        .expect("second reconcile");
    assert_eq!(api.writes(), status_write());
    let status = stored(&api).status.expect("status");
    assert_eq!(
        status.components.influxdb.map(|c| c.ready_replicas),
        Some(1)
    );

    // Nothing moved since: nothing is written at all.
    api.clear_calls();
    reconcile_monitor(&stored(&api), &ctx)
        .await
        .expect("third reconcile");
    assert_eq!(api.writes(), Vec::<(String, String)>::new());
}
