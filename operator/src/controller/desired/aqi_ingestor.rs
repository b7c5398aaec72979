//! The air-quality ingestor: exactly one replica (two would write every reading twice), and
//! `Recreate` so a rollout never runs old and new side by side.

use k8s_openapi::api::apps::v1::Deployment;

use super::labels::Component;
use super::pod::{env, influx_credentials, workload_container};
use super::workload::{Rollout, deployment};
use crate::controller::validate::{InfluxMode, ValidatedMonitor};

pub fn build(model: &ValidatedMonitor) -> Option<Deployment> {
    let aqi = model.aqi.as_ref()?;
    let influx = &model.influx;
    let mut env_vars = vec![
        env("AQI_SOURCE", aqi.source.clone()),
        env("AQI_POLL_SECONDS", aqi.poll_seconds.to_string()),
        env("INFLUX_URL", influx.url.clone()),
        env("INFLUX_DB", influx.aqi_db.clone()),
        // As for the CoAP server: our writer is no admin, the setup sidecar made the database.
        env(
            "CREATE_DATABASE",
            (influx.mode == InfluxMode::External).to_string(),
        ),
    ];
    env_vars.extend(influx_credentials(&influx.writer));
    let container =
        workload_container("aqi-ingestor", &aqi.image, &aqi.resources, vec![], env_vars);
    Some(deployment(
        model,
        &model.names.aqi_ingestor,
        Component::AqiIngestor,
        Some(1),
        Rollout::Recreate,
        container,
    ))
}
