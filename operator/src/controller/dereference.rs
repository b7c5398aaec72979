//! The first step of the pipeline: read what the spec refers to, before validating, so that
//! validation stays pure. Today that is the Secret with the external InfluxDB credentials:
//! only the names of its keys are kept, never the values.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

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
    /// It exists, with these keys.
    Keys(BTreeSet<String>),
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
    let found = match secret {
        None => ReferencedSecret::Missing,
        Some(secret) => {
            ReferencedSecret::Keys(secret.data.unwrap_or_default().into_keys().collect())
        }
    };
    Ok(Dereferenced {
        external_credentials: Some(found),
    })
}
