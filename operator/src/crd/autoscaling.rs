//! `spec.autoscaling`: the policy of the HorizontalPodAutoscalers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Horizontal autoscaling, after the seed's auto-scaling group: 1 to 5 replicas, out above
/// 60 % CPU held 3 minutes, in below 42 % CPU held 15 minutes, one pod per 150 s either way.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.minReplicas <= self.maxReplicas", "message": "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"},
    {"rule": "self.scaleIn.cpuPercent < self.scaleOut.cpuPercent", "message": "autoscaling.scaleIn.cpuPercent must be below autoscaling.scaleOut.cpuPercent"}
]))]
pub struct AutoscalingSpec {
    /// Create HorizontalPodAutoscalers. When false, Grafana and the CoAP server run
    /// `minReplicas` replicas.
    pub enabled: bool,
    /// Fewest replicas of each autoscaled component.
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most replicas of each autoscaled component.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// At most one pod is added or removed per this many seconds.
    #[schemars(range(min = 1, max = 1800))]
    pub cooldown_seconds: i32,
    /// When to add replicas.
    pub scale_out: ScaleOutRule,
    /// When to remove replicas.
    pub scale_in: ScaleInRule,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_replicas: 1,
            max_replicas: 5,
            cooldown_seconds: 150,
            scale_out: ScaleOutRule::default(),
            scale_in: ScaleInRule::default(),
        }
    }
}

// Two types rather than one shared rule, so that each direction has its own per-field defaults:
// `scaleIn: {cpuPercent: 30}` keeps the 900 s hold instead of asking for it.

/// Add replicas when average CPU stays above a threshold for a while.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ScaleOutRule {
    /// Average CPU utilisation, in percent of the CPU request, above which replicas are added
    /// (the autoscaler's target).
    #[schemars(range(min = 1, max = 100))]
    pub cpu_percent: i32,
    /// Seconds the load must stay high before a replica is added (stabilization window).
    #[schemars(range(min = 0, max = 3600))]
    pub hold_seconds: i32,
}

impl Default for ScaleOutRule {
    fn default() -> Self {
        Self {
            cpu_percent: 60,
            hold_seconds: 180,
        }
    }
}

/// Remove replicas when average CPU stays below a threshold for a while.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ScaleInRule {
    /// Average CPU utilisation, in percent of the CPU request, below which replicas are removed;
    /// must be below `scaleOut.cpuPercent`.
    #[schemars(range(min = 1, max = 100))]
    pub cpu_percent: i32,
    /// Seconds the load must stay low before a replica is removed (stabilization window).
    #[schemars(range(min = 0, max = 3600))]
    pub hold_seconds: i32,
}

impl Default for ScaleInRule {
    fn default() -> Self {
        Self {
            cpu_percent: 42,
            hold_seconds: 900,
        }
    }
}
