//! The restore Job is created, never patched: a Job's pod template cannot change, and the Job
//! that ran is the record of the restore (the status is read from it). Asking for another
//! backup makes another Job (its name carries the request).

use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};

use super::{Applier, ApplyError};
use crate::controller::desired::labels::children_selector;
use crate::controller::known_state::{MemoKey, Seen};

impl Applier<'_> {
    /// Creates each of `jobs` that does not exist; the names of those wanted.
    pub(super) async fn create_absent(
        &self,
        jobs: &[Job],
    ) -> Result<std::collections::BTreeSet<String>, ApplyError> {
        let api = self.api::<Job>();
        let mut names = std::collections::BTreeSet::new();
        for job in jobs {
            let name = job.metadata.name.clone().unwrap_or_default();
            names.insert(name.clone());
            let key = MemoKey::child::<Job>(self.namespace, &name);
            let exists = match self.cache.seen::<Job>(self.namespace, &name) {
                Seen::Cached(_) => true,
                Seen::Absent if self.memo.get(key).is_none() => false,
                _ => self.read::<Job>(&name).await?.is_some(),
            };
            if exists {
                continue;
            }
            match api.create(&PostParams::default(), job).await {
                Ok(created) => {
                    tracing::info!(name, "created the restore Job");
                    self.memo.remember(key, 0, &created.metadata);
                    self.metrics.record_write("Job", "create");
                    self.count_write();
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => {
                    return Err(ApplyError::Apply {
                        kind: "Job",
                        name,
                        source,
                    });
                }
            }
        }
        Ok(names)
    }

    /// Every Job of the monitor (the restore Job and the backup CronJob's runs, which carry
    /// its labels): from the cache, else listed.
    pub(super) async fn jobs(&self) -> Result<Vec<Job>, ApplyError> {
        if let Some(cached) = self.cache.list::<Job>(self.namespace, self.instance) {
            return Ok(cached);
        }
        let params = ListParams::default().labels(&children_selector(self.instance));
        let listed = self
            .api::<Job>()
            .list(&params)
            .await
            .map_err(|source| ApplyError::Read {
                what: "Job list".into(),
                source,
            })?;
        Ok(listed.items)
    }
}
