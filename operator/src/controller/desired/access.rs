//! coap-server's identity in the cluster: the only pods of the stack with a service-account
//! token, since they follow the device registry through the API server. The Role lets them
//! read the registry's Secret and ConfigMap, named, and nothing else: not the credentials, not
//! another monitor's devices.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::labels::{Component, owned_meta};
use crate::controller::validate::ValidatedMonitor;

#[derive(Debug, Clone, PartialEq)]
pub struct CoapAccess {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
}

pub fn build(model: &ValidatedMonitor) -> CoapAccess {
    let name = &model.names.coap_server;
    let meta = || owned_meta(model, name, Component::CoapServer);
    CoapAccess {
        service_account: ServiceAccount {
            metadata: meta(),
            // Only coap-server's pods, which ask for it, get a token: not a pod someone else
            // starts under this account.
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta(),
            // `list` and `watch` with resourceNames are allowed for requests that select the
            // one name (`metadata.name=` field selector), which is how coap-server watches.
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into(), "configmaps".into()]),
                resource_names: Some(vec![model.names.devices.clone()]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..PolicyRule::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                namespace: Some(model.namespace.clone()),
                ..Subject::default()
            }]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::model;

    #[test]
    fn the_role_reads_only_the_device_registry() {
        let access = build(&model("{}"));
        let rules = access.role.rules.expect("rules");
        assert_eq!(rules.len(), 1);
        let rule = &rules[0];
        assert_eq!(rule.api_groups.as_deref(), Some(&[String::new()][..]));
        assert_eq!(
            rule.resources.as_deref(),
            Some(&["secrets".to_owned(), "configmaps".to_owned()][..])
        );
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["lab-devices".to_owned()][..])
        );
        assert_eq!(rule.verbs, ["get", "list", "watch"]);
    }

    #[test]
    fn the_binding_gives_the_role_to_coap_servers_account_only() {
        let access = build(&model("{}"));
        let binding = access.role_binding;
        assert_eq!(binding.role_ref.kind, "Role");
        assert_eq!(binding.role_ref.name, "lab-coap-server");
        let subjects = binding.subjects.expect("subjects");
        assert_eq!(subjects.len(), 1);
        assert_eq!(
            (
                subjects[0].kind.as_str(),
                subjects[0].name.as_str(),
                subjects[0].namespace.as_deref()
            ),
            ("ServiceAccount", "lab-coap-server", Some("iot"))
        );
        assert_eq!(
            access.service_account.metadata.name.as_deref(),
            Some("lab-coap-server")
        );
        assert_eq!(
            access.service_account.automount_service_account_token,
            Some(false)
        );
    }
}
