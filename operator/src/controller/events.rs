//! Kubernetes Events about an IotMonitor, through the one `Recorder` of the controller's
//! context (it folds repeats of an Event into a series instead of creating new objects).

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::apply::KeyEvents;
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

/// Names listed in one Event note at most; the rest are counted (a note holds 1 kB).
const NAMES_IN_A_NOTE: usize = 10;

/// `a, b, c`, or the first [`NAMES_IN_A_NOTE`] names and how many more.
fn listed(names: &[String]) -> String {
    let shown = names[..names.len().min(NAMES_IN_A_NOTE)].join(", ");
    match names.len().saturating_sub(NAMES_IN_A_NOTE) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// The Events of what happened to the devices' keys: `(reason, note)`, none if nothing did.
pub(crate) fn device_key_events(keys: &KeyEvents) -> Vec<(&'static str, String)> {
    let mut events = Vec::new();
    match keys.rotated.as_slice() {
        [] => {}
        [one] => events.push(("DeviceKeyRotated", format!("key of device {one} rotated"))),
        many => events.push((
            "DeviceKeyRotated",
            format!("keys of {} devices rotated: {}", many.len(), listed(many)),
        )),
    }
    if !keys.revoked.is_empty() {
        events.push((
            "DevicesRevoked",
            format!(
                "{} device(s) revoked, their keys removed: {}",
                keys.revoked.len(),
                listed(&keys.revoked)
            ),
        ));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("d{i}")).collect()
    }

    #[test]
    fn a_rotation_names_its_device() {
        let keys = KeyEvents {
            rotated: names(1),
            revoked: Vec::new(),
        };
        assert_eq!(
            device_key_events(&keys),
            [("DeviceKeyRotated", "key of device d1 rotated".to_owned())]
        );
    }

    #[test]
    fn revocations_are_one_event_and_long_lists_are_cut() {
        let keys = KeyEvents {
            rotated: names(12),
            revoked: names(2),
        };
        let events = device_key_events(&keys);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].1,
            "keys of 12 devices rotated: d1, d2, d3, d4, d5, d6, d7, d8, d9, d10 and 2 more"
        );
        assert_eq!(
            events[1],
            (
                "DevicesRevoked",
                "2 device(s) revoked, their keys removed: d1, d2".to_owned()
            )
        );
    }

    #[test]
    fn nothing_happened_nothing_is_said() {
        assert!(device_key_events(&KeyEvents::default()).is_empty());
    }
}
