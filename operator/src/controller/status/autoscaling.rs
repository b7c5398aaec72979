//! The `Autoscaling` condition: what the operator's HPAs say about themselves, so that
//! `kubectl get iotmon` tells a user why nothing scales (no metrics-server, no CPU request,
//! a target that cannot be scaled).
//!
//! Only the HPA conditions' type, status and reason decide the condition's status; the
//! message is taken from the condition that explains it. `AbleToScale`'s message is never
//! used while it is true: it names the latest replica count and would rewrite the status on
//! every scaling step.

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub(crate) const AUTOSCALING: &str = "Autoscaling";

/// A new HPA has no metrics until metrics-server has two points of its pods (~40 s on the local
/// control plane, longer with a 60 s resolution): "metrics unavailable" that young is `Unknown`,
/// not a failure worth a Warning.
pub(crate) const METRICS_GRACE_SECONDS: i64 = 120;

/// How well the autoscalers work, worst first so that `max` picks the one to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    /// Scaling and metrics work (possibly held at a replica limit).
    Active,
    /// No HPA has reported conditions yet (just created).
    Pending,
    /// An HPA cannot scale or has no metrics.
    Failing,
}

impl Health {
    pub(crate) fn status(self) -> &'static str {
        match self {
            Self::Active => "True",
            Self::Pending => "Unknown",
            Self::Failing => "False",
        }
    }
}

/// The condition to set, before its transition time is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AutoscalingState {
    pub(crate) health: Health,
    pub(crate) reason: String,
    pub(crate) message: String,
}

fn hpa_condition<'a>(
    hpa: &'a HorizontalPodAutoscaler,
    type_: &str,
) -> Option<&'a HorizontalPodAutoscalerCondition> {
    hpa.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn explained(
    health: Health,
    name: &str,
    c: &HorizontalPodAutoscalerCondition,
    fallback: &str,
) -> (Health, String, String) {
    let reason = c.reason.clone().unwrap_or_else(|| fallback.to_owned());
    let message = match c.message.as_deref() {
        Some(m) if !m.is_empty() => format!("{name}: {m}"),
        _ => format!("{name}: {} is {}", c.type_, c.status),
    };
    (health, reason, message)
}

/// Whether the HPA was created less than the grace period before `now` (no timestamp: old).
fn young(hpa: &HorizontalPodAutoscaler, now: &Time) -> bool {
    hpa.metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|created| now.0.as_second() - created.0.as_second() < METRICS_GRACE_SECONDS)
}

/// One HPA: its health, the reason that explains it and a message naming the HPA.
fn one(hpa: &HorizontalPodAutoscaler, now: &Time) -> (Health, String, String) {
    let name = hpa.metadata.name.as_deref().unwrap_or("autoscaler");
    let able = hpa_condition(hpa, "AbleToScale");
    let active = hpa_condition(hpa, "ScalingActive");
    let limited = hpa_condition(hpa, "ScalingLimited");
    if let Some(c) = able.filter(|c| c.status == "False") {
        return explained(Health::Failing, name, c, "NotAbleToScale");
    }
    // ScalingActive is false when metrics are unavailable (FailedGetResourceMetric, e.g. no
    // metrics-server or no CPU request) or scaling is disabled.
    if let Some(c) = active.filter(|c| c.status != "True") {
        let health = if c.status == "False" && !young(hpa, now) {
            Health::Failing
        } else {
            Health::Pending
        };
        return explained(health, name, c, "ScalingInactive");
    }
    if let Some(c) = limited.filter(|c| c.status == "True") {
        return explained(Health::Active, name, c, "ScalingLimited");
    }
    match active {
        Some(c) => explained(Health::Active, name, c, "ScalingActive"),
        None => (
            Health::Pending,
            "AwaitingAutoscaler".to_owned(),
            format!("{name}: the autoscaler has not reported its conditions yet"),
        ),
    }
}

/// The `Autoscaling` condition for `autoscalers`, or `None` when there are none. The worst
/// HPA gives status and reason; the message lists every HPA in that state.
/// A young HPA without metrics is `Pending` (see [`METRICS_GRACE_SECONDS`]).
pub(crate) fn state(
    autoscalers: &[HorizontalPodAutoscaler],
    now: &Time,
) -> Option<AutoscalingState> {
    let each: Vec<_> = autoscalers.iter().map(|h| one(h, now)).collect();
    let worst = each.iter().map(|(h, _, _)| *h).max()?;
    let mut reason = None;
    let mut messages = Vec::new();
    for (health, r, m) in each {
        if health == worst {
            reason.get_or_insert(r);
            messages.push(m);
        }
    }
    Some(AutoscalingState {
        health: worst,
        reason: reason.unwrap_or_default(),
        message: messages.join("; "),
    })
}

/// The Warning to publish when the condition turned bad: it is now `False`, and before it was
/// absent, not `False`, or `False` for another reason.
pub(crate) fn turned_bad<'a>(
    before: Option<&Condition>,
    now: Option<&'a Condition>,
) -> Option<&'a Condition> {
    let now = now.filter(|c| c.status == "False")?;
    match before {
        Some(b) if b.status == "False" && b.reason == now.reason => None,
        _ => Some(now),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn at(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).expect("timestamp"))
    }

    fn cond(
        type_: &str,
        status: &str,
        reason: &str,
        message: &str,
    ) -> HorizontalPodAutoscalerCondition {
        HorizontalPodAutoscalerCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            last_transition_time: None,
            observed_generation: None,
        }
    }

    fn hpa(
        name: &str,
        conditions: Option<Vec<HorizontalPodAutoscalerCondition>>,
    ) -> HorizontalPodAutoscaler {
        HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            status: conditions.map(|c| HorizontalPodAutoscalerStatus {
                conditions: Some(c),
                ..HorizontalPodAutoscalerStatus::default()
            }),
            ..HorizontalPodAutoscaler::default()
        }
    }

    /// The state of one long-standing HPA `x` with these conditions.
    fn judged(conditions: Vec<HorizontalPodAutoscalerCondition>) -> AutoscalingState {
        state(&[hpa("x", Some(conditions))], &at(10_000)).expect("state")
    }

    fn healthy(name: &str, rescaled_to: i32) -> HorizontalPodAutoscaler {
        hpa(
            name,
            Some(vec![
                cond(
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    &format!(
                        "the HPA controller was able to update the target scale to {rescaled_to}"
                    ),
                ),
                cond(
                    "ScalingActive",
                    "True",
                    "ValidMetricFound",
                    "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)",
                ),
                cond(
                    "ScalingLimited",
                    "False",
                    "DesiredWithinRange",
                    "the desired count is within the acceptable range",
                ),
            ]),
        )
    }

    fn no_metrics(name: &str) -> HorizontalPodAutoscaler {
        hpa(
            name,
            Some(vec![
                cond(
                    "AbleToScale",
                    "True",
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale",
                ),
                cond(
                    "ScalingActive",
                    "False",
                    "FailedGetResourceMetric",
                    "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: no metrics returned from resource metrics API",
                ),
            ]),
        )
    }

    /// The condition's status and reason, and how its message starts.
    fn assert_state(s: &AutoscalingState, status: &str, reason: &str, message_start: &str) {
        assert_eq!((s.health.status(), s.reason.as_str()), (status, reason));
        assert!(s.message.starts_with(message_start), "{}", s.message);
    }

    #[test]
    fn no_autoscalers_no_condition() {
        assert_eq!(state(&[], &at(10_000)), None);
    }

    #[test]
    fn working_autoscalers_are_active_with_the_metric_reason() {
        let s = state(
            &[healthy("lab-grafana", 1), healthy("lab-coap-server", 3)],
            &at(10_000),
        )
        .expect("state");
        assert_state(
            &s,
            "True",
            "ValidMetricFound",
            "lab-grafana: the HPA was able",
        );
        assert!(s.message.contains("; lab-coap-server: "), "{}", s.message);
    }

    #[test]
    fn a_scaling_step_does_not_change_the_state() {
        // AbleToScale's message names the new replica count; it must not reach the status.
        assert_eq!(
            state(&[healthy("a", 2)], &at(10_000)),
            state(&[healthy("a", 3)], &at(10_000))
        );
    }

    #[test]
    fn missing_metrics_fail_with_the_hpa_reason_and_message() {
        let s = state(
            &[healthy("lab-grafana", 1), no_metrics("lab-coap-server")],
            &at(10_000),
        )
        .expect("state");
        assert_state(
            &s,
            "False",
            "FailedGetResourceMetric",
            "lab-coap-server: the HPA was unable",
        );
        assert!(!s.message.contains("lab-grafana"), "{}", s.message);
    }

    #[test]
    fn a_young_autoscaler_without_metrics_is_pending_then_failing() {
        let mut h = no_metrics("lab-coap-server");
        h.metadata.creation_timestamp = Some(at(1_000));
        let young = state(
            std::slice::from_ref(&h),
            &at(1_000 + METRICS_GRACE_SECONDS - 1),
        )
        .expect("state");
        assert_eq!(
            (young.health, young.reason.as_str()),
            (Health::Pending, "FailedGetResourceMetric")
        );
        let old = state(&[h], &at(1_000 + METRICS_GRACE_SECONDS)).expect("state");
        assert_eq!(old.health, Health::Failing);
    }

    #[test]
    fn a_target_that_cannot_be_scaled_fails() {
        let s = judged(vec![cond(
            "AbleToScale",
            "False",
            "FailedGetScale",
            "deployments/scale not found",
        )]);
        assert_eq!((s.health, &*s.reason), (Health::Failing, "FailedGetScale"));
        assert_eq!(s.message, "x: deployments/scale not found");
    }

    #[test]
    fn a_replica_limit_is_reported_but_still_active() {
        let s = judged(vec![
            cond(
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size",
            ),
            cond("ScalingActive", "True", "ValidMetricFound", "ok"),
            cond(
                "ScalingLimited",
                "True",
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            ),
        ]);
        assert_eq!((s.health, &*s.reason), (Health::Active, "TooManyReplicas"));
        assert!(s.message.contains("more than the maximum"), "{}", s.message);
    }

    #[test]
    fn a_new_autoscaler_is_pending() {
        let s = state(&[hpa("x", None), healthy("y", 1)], &at(10_000)).expect("state");
        assert_eq!(
            (s.health.status(), s.reason.as_str()),
            ("Unknown", "AwaitingAutoscaler")
        );
    }

    fn monitor_condition(status: &str, reason: &str) -> Condition {
        Condition {
            type_: AUTOSCALING.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn a_warning_only_when_it_turns_bad_or_the_reason_changes() {
        let good = monitor_condition("True", "ValidMetricFound");
        let bad = monitor_condition("False", "FailedGetResourceMetric");
        let other = monitor_condition("False", "FailedGetScale");
        assert_eq!(turned_bad(Some(&good), Some(&bad)), Some(&bad));
        assert_eq!(turned_bad(None, Some(&bad)), Some(&bad));
        assert_eq!(turned_bad(Some(&bad), Some(&bad)), None);
        assert_eq!(turned_bad(Some(&bad), Some(&other)), Some(&other));
        assert_eq!(turned_bad(Some(&bad), Some(&good)), None);
        assert_eq!(turned_bad(None, None), None);
    }
}
