//! The operator's one error type. `category()` is a stable, low-cardinality label for metrics,
//! Events and the `Degraded` condition's reason; messages carry the details.

use crate::controller::validate::InvalidSpec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] InvalidSpec),

    #[error("Secret {name} with the external InfluxDB credentials {problem}")]
    MissingCredentials { name: String, problem: String },

    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot delete {kind} {name} that is no longer wanted: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot update the IotMonitor status: {0}")]
    Status(#[source] kube::Error),

    #[error("cannot serialize {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Error {
    /// CamelCase, fixed set: safe as a metric label and as a condition reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::MissingCredentials { .. } => "MissingCredentials",
            Self::Apply { .. } => "ApplyFailed",
            Self::Delete { .. } => "DeleteFailed",
            Self::Read { .. } => "ReadFailed",
            Self::Status(_) => "StatusUpdateFailed",
            Self::Serialize(..) => "SerializeFailed",
        }
    }

    /// Errors a retry cannot fix: the user must change something first.
    pub fn needs_user_action(&self) -> bool {
        matches!(self, Self::InvalidSpec(_) | Self::MissingCredentials { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
