//! The storage forecast and autoGrow: every few minutes per monitor (not every reconcile), the
//! operator reads InfluxDB's statistics over HTTP as its admin, the claim's capacity, and
//! forecasts when the volume fills (`forecast`, pure); when that is soon and the spec allows,
//! it raises the claim's request (`grow`, pure decision; the patch here). The status and its
//! condition are computed from the [`Measurement`] in `status::storage`.
//!
//! Why the operator asks InfluxDB itself rather than the set-up sidecar measuring: the
//! sidecar has no service-account token (only coap-server's pods have one), so it could only
//! publish its figures on a port the operator would read anyway; one HTTP request with the
//! credentials the operator already owns is less to run and to fence.

mod forecast;
mod grow;
mod influx;
pub(crate) mod quantity;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

pub(crate) use self::forecast::Forecast;
pub(crate) use self::grow::kept_size;
use self::grow::{Claim, Expansion, Grow};
pub(crate) use self::influx::InfluxClient;
use self::stats::Sample;
use super::desired::secrets::{KEY_INFLUX_ADMIN_PASSWORD, KEY_INFLUX_ADMIN_USERNAME};
use super::validate::{InfluxMode, InternalInflux, ValidatedMonitor};
use crate::constants::INFLUX_PORT;
use crate::error::concise;
use crate::metrics::Metrics;

/// The field manager of autoGrow's patches.
const GROW_MANAGER: &str = "iot-operator-autogrow";

/// A fill date this close (or nearer) makes the volume "exhausted soon".
pub(crate) const SOON: Duration = Duration::from_secs(7 * 86_400);

/// What one measurement found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measurement {
    /// The claim's `status.capacity.storage` as written there.
    pub(crate) capacity: String,
    pub(crate) capacity_bytes: u64,
    pub(crate) used_bytes: u64,
    pub(crate) points_per_second: f64,
    pub(crate) bytes_per_point: f64,
    pub(crate) forecast: Forecast,
    /// InfluxDB's clock when it answered.
    pub(crate) at: Timestamp,
    /// What autoGrow did, when the volume fills soon and the spec has it.
    pub(crate) grow: Option<GrowOutcome>,
}

impl Measurement {
    /// Full, or full within [`SOON`].
    pub(crate) fn soon(&self) -> bool {
        match self.forecast {
            Forecast::Full => true,
            Forecast::Fills { after } => after <= SOON,
            Forecast::Fits { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GrowOutcome {
    /// The claim was patched from one request to another.
    Grew { from: String, to: String },
    /// A resize asked for earlier is not done yet.
    Resizing,
    Cannot {
        reason: &'static str,
        message: String,
    },
}

/// What the operator remembers per monitor between measurements.
#[derive(Default)]
pub(crate) struct StorageMemo {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    tried: Instant,
    sample: Option<Sample>,
    /// The request autoGrow last set, until the cache shows it.
    grown_to: Option<String>,
}

/// Entries of monitors not measured for this long are forgotten (deleted monitors).
const FORGET: Duration = Duration::from_secs(86_400);

impl StorageMemo {
    fn due(&self, key: &str, every: Duration) -> bool {
        let Ok(entries) = self.entries.lock() else {
            return false;
        };
        entries.get(key).is_none_or(|e| e.tried.elapsed() >= every)
    }

    fn previous(&self, key: &str) -> Option<Sample> {
        let entries = self.entries.lock().ok()?;
        entries.get(key)?.sample.clone()
    }

    fn record(&self, key: &str, sample: Option<Sample>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, e| e.tried.elapsed() < FORGET);
            let entry = entries.entry(key.to_owned()).or_insert(Entry {
                tried: Instant::now(),
                sample: None,
                grown_to: None,
            });
            entry.tried = Instant::now();
            if sample.is_some() {
                entry.sample = sample;
            }
        }
    }

    fn set_grown(&self, key: &str, to: String) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(entry) = entries.get_mut(key)
        {
            entry.grown_to = Some(to);
        }
    }

    /// The request autoGrow last set for this monitor's claim, if any.
    pub(crate) fn grown_to(&self, key: &str) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        entries.get(key)?.grown_to.clone()
    }
}

/// Why a measurement failed; logged, and the status keeps its last figures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MeasureError {
    #[error("cannot read {what}: {}", concise(.source))]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0} has no {1} yet")]
    NotYet(String, &'static str),
    #[error("Secret {0} lacks {1}")]
    Credentials(String, &'static str),
    #[error(transparent)]
    Influx(#[from] influx::InfluxError),
    #[error(transparent)]
    Stats(#[from] stats::StatsError),
    #[error("the forecast: {0}")]
    Forecast(#[from] forecast::ForecastError),
    #[error("cannot grow claim {claim}: {}", concise(.source))]
    Grow {
        claim: String,
        #[source]
        source: kube::Error,
    },
}

/// The monitor's key in the memo.
pub(crate) fn key(model: &ValidatedMonitor) -> String {
    format!("{}/{}", model.namespace, model.names.instance)
}

#[derive(Clone, Copy)]
/// What a measurement works with: the API client, InfluxDB's client, the memo and the
/// metrics of the operator's writes.
pub(crate) struct Tools<'a> {
    pub(crate) client: &'a Client,
    pub(crate) influx: &'a InfluxClient,
    pub(crate) memo: &'a StorageMemo,
    pub(crate) metrics: &'a Metrics,
}

/// Measures the monitor's storage if it is due (every `every`) and its InfluxDB is ready;
/// `None` otherwise, or when the measurement failed (logged).
pub(crate) async fn check(
    tools: &Tools<'_>,
    every: Duration,
    model: &ValidatedMonitor,
    stateful_sets: &[StatefulSet],
    services: &[Service],
) -> Option<Measurement> {
    let InfluxMode::Internal(internal) = &model.influx.mode else {
        return None;
    };
    let key = key(model);
    let memo = tools.memo;
    if !memo.due(&key, every) || !influx_ready(model, stateful_sets) {
        return None;
    }
    let host = influx_host(model, services);
    match measure(tools, model, internal, &host, &key).await {
        Ok(measurement) => Some(measurement),
        Err(error) => {
            memo.record(&key, None);
            tracing::warn!(monitor = %key, %error, "cannot measure the storage");
            None
        }
    }
}

fn influx_ready(model: &ValidatedMonitor, stateful_sets: &[StatefulSet]) -> bool {
    stateful_sets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(model.names.influxdb.as_str()))
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .is_some_and(|ready| ready > 0)
}

async fn measure(
    tools: &Tools<'_>,
    model: &ValidatedMonitor,
    internal: &InternalInflux,
    host: &str,
    key: &str,
) -> Result<Measurement, MeasureError> {
    let Tools {
        client,
        influx,
        memo,
        metrics,
    } = *tools;
    let ns = &model.namespace;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim_name = &model.names.influxdb_data;
    let claim = claims
        .get(claim_name)
        .await
        .map_err(|source| MeasureError::Read {
            what: format!("claim {claim_name}"),
            source,
        })?;
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .ok_or_else(|| MeasureError::NotYet(format!("claim {claim_name}"), "capacity"))?;
    let capacity_bytes = quantity::bytes(&capacity)
        .ok_or_else(|| MeasureError::NotYet(format!("claim {claim_name}"), "capacity"))?;

    let (user, password) = admin_credentials(client, ns, &model.names.credentials).await?;
    let body = influx.stats(host, INFLUX_PORT, &user, &password).await?;
    let sample = stats::parse(&body)?;
    let previous = memo.previous(key);
    let streams = stats::measure(previous.as_ref(), &sample);
    memo.record(key, Some(sample.clone()));
    let streams =
        streams.ok_or_else(|| MeasureError::NotYet("InfluxDB".into(), "measurement window"))?;
    let plain: Vec<_> = streams.iter().map(|m| m.stream.clone()).collect();
    let forecast = forecast::forecast(capacity_bytes as f64, 0.0, &plain)?;
    // `+ 0.0`: the sum of no streams is -0.0, which would print as "-0.00".
    let used_bytes: f64 = plain.iter().map(|s| s.used_bytes).sum::<f64>() + 0.0;
    let points_per_second: f64 = plain.iter().map(|s| s.points_per_second).sum::<f64>() + 0.0;
    let written: f64 = plain
        .iter()
        .map(|s| s.points_per_second * s.bytes_per_point)
        .sum();
    let mut measurement = Measurement {
        capacity,
        capacity_bytes,
        used_bytes: used_bytes as u64,
        points_per_second,
        bytes_per_point: if points_per_second > 0.0 {
            written / points_per_second
        } else {
            0.0
        },
        forecast,
        at: sample.at,
        grow: None,
    };
    tracing::debug!(monitor = %key, ?streams, "storage measured");
    if measurement.soon()
        && let Some(max_size) = &internal.auto_grow_max
    {
        measurement.grow =
            Some(auto_grow(client, metrics, memo, key, &claims, &claim, max_size).await?);
    }
    Ok(measurement)
}

/// Where InfluxDB answers: its Service's cluster IP (reachable from a pod and from a node,
/// without cluster DNS), else the Service's DNS name.
fn influx_host(model: &ValidatedMonitor, services: &[Service]) -> String {
    services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(model.names.influxdb.as_str()))
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None")
        .unwrap_or_else(|| format!("{}.{}.svc", model.names.influxdb, model.namespace))
}

async fn admin_credentials(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(String, String), MeasureError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get(name)
        .await
        .map_err(|source| MeasureError::Read {
            what: format!("Secret {name}"),
            source,
        })?;
    let data = secret.data.unwrap_or_default();
    let value = |key: &'static str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| MeasureError::Credentials(name.to_owned(), key))
    };
    Ok((
        value(KEY_INFLUX_ADMIN_USERNAME)?,
        value(KEY_INFLUX_ADMIN_PASSWORD)?,
    ))
}

async fn auto_grow(
    client: &Client,
    metrics: &Metrics,
    memo: &StorageMemo,
    key: &str,
    claims: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    max_size: &str,
) -> Result<GrowOutcome, MeasureError> {
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    let capacity = claim
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity::bytes(&q.0))
        .unwrap_or(0);
    let facts = Claim {
        request_bytes: quantity::bytes(&request).unwrap_or(0),
        capacity_bytes: capacity,
        class: spec.storage_class_name.clone(),
    };
    let expansion = match &facts.class {
        Some(class) => match Api::<StorageClass>::all(client.clone()).get(class).await {
            Ok(class) if class.allow_volume_expansion == Some(true) => Expansion::Allowed,
            Ok(_) => Expansion::NotAllowed,
            Err(error) => {
                tracing::debug!(%error, "cannot read the StorageClass; trying the resize");
                Expansion::Unknown
            }
        },
        None => Expansion::NotAllowed,
    };
    let name = claim.metadata.name.clone().unwrap_or_default();
    match grow::decide(&facts, expansion, max_size) {
        Grow::Resizing => Ok(GrowOutcome::Resizing),
        Grow::Cannot { reason, message } => Ok(GrowOutcome::Cannot { reason, message }),
        Grow::To { quantity, .. } => {
            // A merge patch of the one field, under a manager of its own: an apply of a partial
            // claim under the operator's manager would give up the fields it leaves out. The
            // next apply asks for the larger request too (`kept_size`), so nobody shrinks it.
            let patch = json!({"spec": {"resources": {"requests": {"storage": quantity}}}});
            let params = PatchParams {
                field_manager: Some(GROW_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match claims.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {
                    metrics.record_write("PersistentVolumeClaim", "patch");
                    memo.set_grown(key, quantity.clone());
                    Ok(GrowOutcome::Grew {
                        from: request,
                        to: quantity,
                    })
                }
                // Admission refuses a class without expansion: a cause the user can fix.
                Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => {
                    Ok(GrowOutcome::Cannot {
                        reason: "ResizeRefused",
                        message: format!(
                            "the API server refused to grow claim {name}: {}",
                            status.message
                        ),
                    })
                }
                Err(source) => Err(MeasureError::Grow {
                    claim: name,
                    source,
                }),
            }
        }
    }
}
