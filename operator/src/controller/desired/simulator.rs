//! The DHT sensor simulator: one Deployment sending to the CoAP Service.

use k8s_openapi::api::apps::v1::Deployment;

use super::labels::Component;
use super::pod::{env, workload_container};
use super::workload::{Rollout, deployment, workload_pods};
use crate::controller::validate::ValidatedMonitor;

pub fn build(model: &ValidatedMonitor) -> Option<Deployment> {
    let sim = model.simulator.as_ref()?;
    let env_vars = vec![
        env(
            "COAP_SERVER",
            format!("{}:{}", model.names.coap_server, model.coap.port),
        ),
        env("SIM_SENSORS", sim.sensors.to_string()),
        env("SIM_PLACES", sim.places.join(",")),
        env("SIM_INTERVAL_SECONDS", sim.interval_seconds.to_string()),
    ];
    let container = workload_container("sensor-sim", &sim.image, &sim.resources, vec![], env_vars);
    Some(deployment(
        model,
        &model.names.simulator,
        Component::Simulator,
        Some(1),
        Rollout::Rolling,
        workload_pods(model, Component::Simulator, &sim.scheduling, container),
    ))
}
