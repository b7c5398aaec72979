//! The credentials Secret is created, never applied: see `desired::secrets`.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{Applier, ApplyError};
use crate::controller::desired::secrets::{Credentials, random_password};

impl Applier<'_> {
    /// Creates the credentials Secret when absent and adds missing keys; existing values are
    /// never touched (see `desired::secrets`).
    pub(super) async fn ensure_credentials(
        &self,
        credentials: &Credentials,
    ) -> Result<(), ApplyError> {
        let api = self.api::<Secret>();
        let name = credentials.secret.metadata.name.clone().unwrap_or_default();
        // The cache holds key names only; a complete cached Secret needs no read.
        let cached = self.cache.get::<Secret>(self.namespace, &name);
        if cached.is_some_and(|s| {
            let data = s.data.unwrap_or_default();
            credentials.missing(&data, String::new).is_empty()
        }) {
            return Ok(());
        }
        let key = self.memo_key::<Secret>(&name);
        let existing = if self.surely_new::<Secret>(&name, key) {
            None
        } else {
            api.get_opt(&name)
                .await
                .map_err(|source| ApplyError::Read {
                    what: format!("Secret {name}"),
                    source,
                })?
        };
        match existing {
            None => {
                let secret = credentials.new_secret(random_password);
                match api.create(&PostParams::default(), &secret).await {
                    Ok(created) => {
                        tracing::info!(name, "created the credentials Secret");
                        // Its values are never compared, so no hash (0): the memo only records
                        // that it exists (see `surely_new`).
                        self.memo.remember(key, 0, &created.metadata);
                        self.metrics.record_write("Secret", "create");
                        self.count_write();
                    }
                    // Created between our read and our write: theirs is as good as ours.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(source) => {
                        return Err(ApplyError::Apply {
                            kind: "Secret",
                            name,
                            source,
                        });
                    }
                }
            }
            Some(secret) => {
                let data = secret.data.unwrap_or_default();
                let missing = credentials.missing(&data, random_password);
                if !missing.is_empty() {
                    tracing::info!(name, keys = ?missing.keys().collect::<Vec<_>>(), "adding missing credentials");
                    // A merge patch of stringData only adds keys; nothing existing changes.
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "stringData": missing })),
                    )
                    .await
                    .map_err(|source| ApplyError::Apply {
                        kind: "Secret",
                        name: name.clone(),
                        source,
                    })?;
                    self.metrics.record_write("Secret", "patch");
                    self.count_write();
                }
            }
        }
        Ok(())
    }
}
