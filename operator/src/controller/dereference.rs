//! The first step of the pipeline: read what the spec refers to, before validating, so that
//! validation stays pure. Today that is the Secret with the external InfluxDB credentials:
//! only whether it opts in, the names of its keys and the URL it allows are kept, never the
//! values.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};

use crate::constants::{EXTERNAL_CREDENTIALS_LABEL, EXTERNAL_URL_ANNOTATION, OPT_IN_VALUE};
use crate::crd::IotMonitor;
use crate::error::concise;

/// What the spec refers to, as found in the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dereferenced {
    /// The external credentials Secret; `None` when the spec names none.
    pub external_credentials: Option<ReferencedSecret>,
}

/// A Secret the spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferencedSecret {
    Missing,
    /// It exists but does not carry [`EXTERNAL_CREDENTIALS_LABEL`]`=true`: its owner has not
    /// agreed to its use, so nothing else of it is kept.
    NotOptedIn,
    /// It exists and opts in.
    OptedIn {
        /// The names of its keys.
        keys: BTreeSet<String>,
        /// The one URL it may be sent to ([`EXTERNAL_URL_ANNOTATION`]), if its owner named one.
        url: Option<String>,
    },
}

impl ReferencedSecret {
    /// What of `secret` the validate step may know: whether it opts in and, only if it does,
    /// its key names and allowed URL.
    pub fn of(secret: Option<&Secret>) -> Self {
        let Some(secret) = secret else {
            return Self::Missing;
        };
        if secret
            .labels()
            .get(EXTERNAL_CREDENTIALS_LABEL)
            .map(String::as_str)
            != Some(OPT_IN_VALUE)
        {
            return Self::NotOptedIn;
        }
        let mut keys: BTreeSet<String> = secret
            .data
            .iter()
            .flat_map(|data| data.keys().cloned())
            .collect();
        // stringData is write-only on the API server, but a client may hand such an object over.
        keys.extend(secret.string_data.iter().flat_map(|d| d.keys().cloned()));
        Self::OptedIn {
            keys,
            url: secret.annotations().get(EXTERNAL_URL_ANNOTATION).cloned(),
        }
    }
}

/// An object the spec refers to could not be read; a retry may succeed.
#[derive(Debug, thiserror::Error)]
pub enum DereferenceError {
    #[error("cannot read {what}: {}", concise(.source))]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl DereferenceError {
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "ReadFailed",
        }
    }
}

/// Reads every object the spec of `monitor` refers to.
pub async fn dereference(
    client: &Client,
    monitor: &IotMonitor,
) -> Result<Dereferenced, DereferenceError> {
    let Some(external) = &monitor.spec.influxdb.external else {
        return Ok(Dereferenced::default());
    };
    let namespace = monitor.namespace().unwrap_or_default();
    let name = &external.credentials_secret;
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|source| DereferenceError::Read {
            what: format!("Secret {name}"),
            source,
        })?;
    Ok(Dereferenced {
        external_credentials: Some(ReferencedSecret::of(secret.as_ref())),
    })
}

/// The monitors among `monitors` that name `secret` as their external credentials: those a
/// change of its opt-in must wake.
pub fn monitors_naming<'a>(
    monitors: impl IntoIterator<Item = &'a IotMonitor>,
    secret: &Secret,
) -> Vec<ObjectRef<IotMonitor>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    monitors
        .into_iter()
        .filter(|m| m.namespace() == namespace)
        .filter(|m| {
            m.spec
                .influxdb
                .external
                .as_ref()
                .is_some_and(|e| e.credentials_secret == name)
        })
        .map(ObjectRef::from_obj)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn secret(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Secret {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        Secret {
            metadata: ObjectMeta {
                name: Some("ext".into()),
                labels: map(labels),
                annotations: map(annotations),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([
                ("username".into(), ByteString(b"writer".to_vec())),
                ("password".into(), ByteString(b"s3cret".to_vec())),
            ])),
            ..Secret::default()
        }
    }

    #[test]
    fn a_secret_without_the_label_is_not_opted_in_and_nothing_of_it_is_kept() {
        assert_eq!(
            ReferencedSecret::of(Some(&secret(&[], &[]))),
            ReferencedSecret::NotOptedIn
        );
        // Only the value `true` opts in; an annotation of the label's name does not.
        for value in ["false", "yes", "True", ""] {
            let s = secret(&[(EXTERNAL_CREDENTIALS_LABEL, value)], &[]);
            assert_eq!(ReferencedSecret::of(Some(&s)), ReferencedSecret::NotOptedIn);
        }
        let annotated = secret(&[], &[(EXTERNAL_CREDENTIALS_LABEL, "true")]);
        assert_eq!(
            ReferencedSecret::of(Some(&annotated)),
            ReferencedSecret::NotOptedIn
        );
    }

    #[test]
    fn an_opted_in_secret_gives_its_key_names_and_allowed_url() {
        let s = secret(
            &[(EXTERNAL_CREDENTIALS_LABEL, "true")],
            &[(EXTERNAL_URL_ANNOTATION, "https://influx.example:8086")],
        );
        assert_eq!(
            ReferencedSecret::of(Some(&s)),
            ReferencedSecret::OptedIn {
                keys: BTreeSet::from(["password".into(), "username".into()]),
                url: Some("https://influx.example:8086".into()),
            }
        );
        let found = format!("{:?}", ReferencedSecret::of(Some(&s)));
        assert!(!found.contains("s3cret"), "no value is kept: {found}");
    }

    #[test]
    fn a_secret_wakes_only_the_monitors_of_its_namespace_that_name_it() {
        use crate::controller::fixtures::monitor;
        let naming =
            monitor("{influxdb: {external: {url: 'http://i:8086', credentialsSecret: ext}}}");
        let mut other_namespace = naming.clone();
        other_namespace.metadata.namespace = Some("elsewhere".into());
        let mut other_secret =
            monitor("{influxdb: {external: {url: 'http://i:8086', credentialsSecret: other}}}");
        other_secret.metadata.name = Some("lab2".into());
        let internal = monitor("{}");
        let mut s = secret(&[(EXTERNAL_CREDENTIALS_LABEL, "true")], &[]);
        s.metadata.namespace = Some("iot".into());
        let woken = monitors_naming([&naming, &other_namespace, &other_secret, &internal], &s);
        assert_eq!(woken, vec![ObjectRef::from_obj(&naming)]);
    }

    #[test]
    fn no_secret_is_missing() {
        assert_eq!(ReferencedSecret::of(None), ReferencedSecret::Missing);
    }
}
