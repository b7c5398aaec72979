//! The air-quality ingestor: exactly one replica (two would write every reading twice), and
//! `Recreate` so a rollout never runs old and new side by side.

use k8s_openapi::api::apps::v1::Deployment;

use super::labels::Component;
use super::pod::{env, influx_writer_env, workload_container};
use super::workload::{Rollout, deployment, workload_pods};
use crate::controller::validate::ValidatedMonitor;

pub fn build(model: &ValidatedMonitor) -> Option<Deployment> {
    let aqi = model.aqi.as_ref()?;
    let mut env_vars = vec![
        env("AQI_SOURCE", aqi.source.clone()),
        env("AQI_POLL_SECONDS", aqi.poll_seconds.to_string()),
    ];
    env_vars.extend(influx_writer_env(&model.influx, &model.influx.aqi_db));
    let container =
        workload_container("aqi-ingestor", &aqi.image, &aqi.resources, vec![], env_vars);
    Some(deployment(
        model,
        &model.names.aqi_ingestor,
        Component::AqiIngestor,
        Some(1),
        Rollout::Recreate,
        workload_pods(model, Component::AqiIngestor, &aqi.scheduling, container),
    ))
}
