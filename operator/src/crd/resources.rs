//! CPU and memory of each component, with that component's defaults field by field.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// CPU and memory for one container, resolved: what the pod gets. Requests are always set (the
/// autoscaler needs CPU requests).
#[derive(Clone, Debug, PartialEq)]
pub struct ResourcesSpec {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub cpu_limit: Option<String>,
}

/// One `resources` type per component, so that each field has that component's default: a spec
/// that sets only `cpuRequest` keeps the component's memory request and limit.
macro_rules! resources_spec {
    ($(#[$doc:meta])* $name:ident, $cpu:literal, $memory:literal, $memory_limit:literal) => {
        $(#[$doc])*
        #[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
        #[serde(default, rename_all = "camelCase")]
        pub struct $name {
            /// CPU request, a Kubernetes quantity such as `100m`.
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "cpuRequest must be a quantity such as 100m"}]))]
            #[schemars(length(max = 32))]
            pub cpu_request: String,
            /// Memory request, a Kubernetes quantity such as `64Mi`.
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "memoryRequest must be a quantity such as 64Mi"}]))]
            #[schemars(length(max = 32))]
            pub memory_request: String,
            /// Memory limit; the container is restarted when it uses more.
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "memoryLimit must be a quantity such as 256Mi"}]))]
            #[schemars(length(max = 32))]
            pub memory_limit: String,
            /// Optional CPU limit. Unset by default: CPU limits throttle and rarely help.
            #[serde(skip_serializing_if = "Option::is_none")]
            #[schemars(extend("x-kubernetes-validations" = [{"rule": "isQuantity(self)", "message": "cpuLimit must be a quantity such as 500m"}]))]
            #[schemars(length(max = 32))]
            pub cpu_limit: Option<String>,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    cpu_request: $cpu.into(),
                    memory_request: $memory.into(),
                    memory_limit: $memory_limit.into(),
                    cpu_limit: None,
                }
            }
        }

        impl From<&$name> for ResourcesSpec {
            fn from(r: &$name) -> Self {
                ResourcesSpec {
                    cpu_request: r.cpu_request.clone(),
                    memory_request: r.memory_request.clone(),
                    memory_limit: r.memory_limit.clone(),
                    cpu_limit: r.cpu_limit.clone(),
                }
            }
        }
    };
}

resources_spec!(
    /// InfluxDB's CPU and memory (defaults: 100m / 128Mi, limit 512Mi).
    InfluxDbResources, "100m", "128Mi", "512Mi"
);
resources_spec!(
    /// Grafana's CPU and memory (defaults: 100m / 128Mi, limit 512Mi).
    GrafanaResources, "100m", "128Mi", "512Mi"
);
resources_spec!(
    /// The CoAP server's CPU and memory (defaults: 50m / 32Mi, limit 128Mi).
    CoapResources, "50m", "32Mi", "128Mi"
);
resources_spec!(
    /// The simulator's CPU and memory (defaults: 10m / 16Mi, limit 64Mi).
    SimulatorResources, "10m", "16Mi", "64Mi"
);
resources_spec!(
    /// The AQI ingestor's CPU and memory (defaults: 50m / 64Mi, limit 256Mi).
    AqiResources, "50m", "64Mi", "256Mi"
);
