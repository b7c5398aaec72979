//! The operator's one error type. `category()` is a stable, low-cardinality label for metrics,
//! Events and the `Degraded` condition's reason; messages carry the details.

use crate::controller::validate::InvalidSpec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] InvalidSpec),

    #[error("Secret {name} with the external InfluxDB credentials {problem}")]
    MissingCredentials { name: String, problem: String },

    #[error("cannot apply {kind} {name}: {}", concise(.source))]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot delete {kind} {name} that is no longer wanted: {}", concise(.source))]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot read {what}: {}", concise(.source))]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },

    #[error("cannot update the IotMonitor status: {}", concise(.0))]
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

/// The API server's own message (what a person can act on), without the Debug dump of the
/// whole Status object that `kube::Error`'s Display appends.
fn concise(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({})", status.message, status.reason)
        }
        other => other.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_the_servers_message_only() {
        let status = kube::core::Status::failure("configmaps \"x\" is forbidden", "Forbidden");
        let err = Error::Apply {
            kind: "ConfigMap",
            name: "x".into(),
            source: kube::Error::Api(Box::new(status)),
        };
        assert_eq!(
            err.to_string(),
            "cannot apply ConfigMap x: configmaps \"x\" is forbidden (Forbidden)"
        );
        assert_eq!(err.category(), "ApplyFailed");
    }
}
