//! HorizontalPodAutoscalers (autoscaling/v2) for Grafana and the CoAP server, mirroring the
//! seed's auto-scaling group:
//! - target = scale-out CPU %; scale-up stabilization = scale-out hold; tolerance 0 upwards;
//! - scale-down stabilization = scale-in hold; tolerance `1 - scaleIn/scaleOut` downwards, so
//!   the HPA removes pods only below the scale-in threshold (42 % for 60 %);
//! - one pod per `cooldownSeconds` in either direction.
//!
//! Per-direction `tolerance` needs the HPAConfigurableTolerance feature; where the API server
//! drops it, the cluster-wide 10 % tolerance applies and the status says so.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::labels::{Component, owned_meta};
use crate::controller::validate::{Replicas, ScalePolicy, ValidatedMonitor};

#[derive(Debug, Clone, PartialEq)]
pub struct Autoscalers {
    pub grafana: HorizontalPodAutoscaler,
    pub coap_server: HorizontalPodAutoscaler,
}

pub fn build(model: &ValidatedMonitor) -> Option<Autoscalers> {
    let policy = model.autoscaling?;
    let names = &model.names;
    Some(Autoscalers {
        grafana: hpa(
            model,
            &names.grafana,
            Component::Grafana,
            model.grafana.replicas,
            policy,
        ),
        coap_server: hpa(
            model,
            &names.coap_server,
            Component::CoapServer,
            model.coap.replicas,
            policy,
        ),
    })
}

/// A Quantity in the canonical form the API server stores (`300m`, `0`), so reading it back
/// compares equal and a no-op reconcile writes nothing.
pub fn tolerance_quantity(tolerance: f64) -> Quantity {
    // Clamped to [0, 1] by construction of the policy; the cast cannot truncate.
    let milli = (tolerance.clamp(0.0, 1.0) * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

fn rules(window_seconds: i32, tolerance: f64, cooldown_seconds: i32) -> HPAScalingRules {
    HPAScalingRules {
        stabilization_window_seconds: Some(window_seconds),
        select_policy: Some("Max".into()),
        policies: Some(vec![HPAScalingPolicy {
            type_: "Pods".into(),
            value: 1,
            period_seconds: cooldown_seconds,
        }]),
        tolerance: Some(tolerance_quantity(tolerance)),
    }
}

fn hpa(
    model: &ValidatedMonitor,
    target: &str,
    component: Component,
    replicas: Replicas,
    policy: ScalePolicy,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: owned_meta(model, target, component),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: target.to_owned(),
            },
            min_replicas: Some(replicas.min),
            max_replicas: replicas.max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(policy.target_cpu_percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_up: Some(rules(
                    policy.scale_up_window_seconds,
                    0.0,
                    policy.cooldown_seconds,
                )),
                scale_down: Some(rules(
                    policy.scale_down_window_seconds,
                    policy.scale_down_tolerance,
                    policy.cooldown_seconds,
                )),
            }),
        },
        ..HorizontalPodAutoscaler::default()
    }
}
