//! The credentials Secret is created, never applied: see `desired::secrets`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{Applier, ApplyError};
use crate::controller::desired::secrets::{Credentials, random_password};
use crate::controller::known_state::{MemoKey, Seen};

impl Applier<'_> {
    /// Creates the credentials Secret when absent and adds missing keys; existing values are
    /// never touched (see `desired::secrets`).
    pub(super) async fn ensure_credentials(
        &self,
        credentials: &Credentials,
    ) -> Result<(), ApplyError> {
        let api = self.api::<Secret>();
        let name = credentials.secret.metadata.name.clone().unwrap_or_default();
        let key = MemoKey::child::<Secret>(self.namespace, &name);
        let existing = match self.cache.seen::<Secret>(self.namespace, &name) {
            // The cache holds key names only; a complete cached Secret needs no read.
            Seen::Cached(cached) if has_every_key(credentials, &cached) => return Ok(()),
            // As for an applied child: never seen, never written, so created without a read.
            Seen::Absent if self.memo.get(key).is_none() => None,
            _ => self.read::<Secret>(&name).await?,
        };
        match existing {
            None => {
                let secret = credentials.new_secret(random_password);
                match api.create(&PostParams::default(), &secret).await {
                    Ok(created) => {
                        tracing::info!(name, "created the credentials Secret");
                        // Its values are never compared, so no hash (0): the memo only records
                        // that it exists (what is known absent but remembered is read).
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

/// Whether `secret` has every key of `credentials`, whatever their values.
fn has_every_key(credentials: &Credentials, secret: &Secret) -> bool {
    let none = BTreeMap::new();
    let keys = secret.data.as_ref().unwrap_or(&none);
    credentials.missing(keys, String::new).is_empty()
}
