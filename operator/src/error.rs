//! What the error types of the pipeline's steps share. Each step has its own error type
//! (`dereference`, `validate`, `apply`, `status`); the controller gathers them into
//! `ReconcileError`, whose `category()` is a stable label for metrics, Events and conditions.

/// The API server's own message (what a person can act on), without the Debug dump of the
/// whole Status object that `kube::Error`'s Display appends.
pub fn concise(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => {
            format!("{} ({})", status.message, status.reason)
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_the_servers_message_and_reason() {
        let status = kube::core::Status::failure("configmaps \"x\" is forbidden", "Forbidden");
        let err = kube::Error::Api(Box::new(status));
        assert_eq!(concise(&err), "configmaps \"x\" is forbidden (Forbidden)");
    }
}
