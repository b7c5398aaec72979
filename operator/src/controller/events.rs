//! Kubernetes Events about an IotMonitor, through the one `Recorder` of the controller's
//! context (it folds repeats of an Event into a series instead of creating new objects).

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::context::Context;
use crate::crd::IotMonitor;

/// Best effort: an Event that cannot be published is logged, never a reconcile failure.
pub async fn publish(
    ctx: &Context,
    monitor: &IotMonitor,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &monitor.object_ref(&())).await {
        Ok(()) => ctx.metrics.record_write("Event", "create"),
        Err(err) => tracing::warn!(error = %err, "cannot publish an Event"),
    }
}
