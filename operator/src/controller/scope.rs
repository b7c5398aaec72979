//! Which namespaces the controller watches (and so what RBAC it needs).

use std::fmt;

use kube::{Api, Client, Resource};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    AllNamespaces,
    Namespace(String),
}

impl WatchScope {
    /// From `--namespace` / `WATCH_NAMESPACE`. Unset and empty both mean every namespace: the
    /// Helm chart's default is `watchNamespace: ""`, which reaches the operator as an empty
    /// variable, and an empty namespace must never be taken for a name.
    pub fn from_setting(namespace: Option<&str>) -> Self {
        match namespace.map(str::trim) {
            None | Some("") => Self::AllNamespaces,
            Some(ns) => Self::Namespace(ns.to_owned()),
        }
    }

    /// An API of kind `K` over the watched namespaces.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Self::AllNamespaces => Api::all(client.clone()),
            Self::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

impl fmt::Display for WatchScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AllNamespaces => f.write_str("all namespaces"),
            Self::Namespace(ns) => write!(f, "namespace {ns}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_watch_namespace_means_every_namespace() {
        for unset in [None, Some(""), Some("  ")] {
            assert_eq!(
                WatchScope::from_setting(unset),
                WatchScope::AllNamespaces,
                "{unset:?}"
            );
        }
        assert_eq!(WatchScope::AllNamespaces.to_string(), "all namespaces");
    }

    #[test]
    fn a_named_watch_namespace_is_that_namespace() {
        let scope = WatchScope::from_setting(Some("iot"));
        assert_eq!(scope, WatchScope::Namespace("iot".into()));
        assert_eq!(scope.to_string(), "namespace iot");
    }
}
