//! What can go wrong while applying the desired objects.

use crate::error::concise;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
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

    #[error("cannot serialize {0}: {1}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl ApplyError {
    /// CamelCase, fixed set: safe as a metric label and as a condition reason.
    pub(crate) fn category(&self) -> &'static str {
        match self {
            Self::Apply { .. } => "ApplyFailed",
            Self::Delete { .. } => "DeleteFailed",
            Self::Read { .. } => "ReadFailed",
            Self::Serialize(..) => "SerializeFailed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_the_servers_message_only() {
        let status = kube::core::Status::failure("configmaps \"x\" is forbidden", "Forbidden");
        let err = ApplyError::Apply {
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
