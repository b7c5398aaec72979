//! Where a component's pods may run: `nodeSelector`, `tolerations` and `affinity`, as in a pod
//! spec, and passed into the component's pod template unchanged. Unset by default.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Flattened into each component's spec, so that the fields read as they do in a pod spec.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels the component's pods require, such as `disktype: ssd`; as a pod's
    /// `nodeSelector`. Unset: any node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the component's pods tolerate, as a pod's `tolerations` (`kubectl explain
    /// pod.spec.tolerations`). Unset: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "terse::<Vec<Toleration>>")]
    pub tolerations: Vec<Toleration>,
    /// Node affinity and pod (anti-)affinity of the component's pods, as a pod's `affinity`
    /// (`kubectl explain pod.spec.affinity`). Unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "terse::<Option<Affinity>>")]
    pub affinity: Option<Affinity>,
}

/// The full, validating schema of a Kubernetes type, without the descriptions of its nested
/// fields: the API server still checks every field and type, and the CRD stays half the size
/// (their descriptions would add about 30 KB per component, and push the CRD past the 256 KB
/// that a client-side `kubectl apply` can store; `kubectl explain pod.spec.affinity` has them).
/// The field's own description comes from its doc comment.
fn terse<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<T>();
    if let Some(object) = schema.as_object_mut() {
        for value in object.values_mut() {
            strip_descriptions(value);
        }
    }
    schema
}

fn strip_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("description");
            for nested in map.values_mut() {
                strip_descriptions(nested);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}
