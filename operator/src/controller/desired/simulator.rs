//! The DHT sensor simulator: one Deployment sending to the CoAP Service over DTLS, each
//! simulated sensor as the device of its name, with its key from the device registry.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};

use super::labels::Component;
use super::pod::{env, workload_container};
use super::template::PodTemplateBuilder;
use super::workload::{Rollout, deployment};
use crate::constants::{COAPS_PORT, WORKLOAD_UID};
use crate::controller::validate::{Simulator, ValidatedMonitor};

/// Where the simulator finds its sensors' keys: the file `sim-<i>` holds sensor i's key.
pub const KEYS_DIR: &str = "/var/run/iot/devices";

/// Read by the owner only. The pod's fsGroup (`pod::pod_security`) makes the kubelet give the
/// files to that group with group read added, so the simulator's non-root user reads them.
const KEY_FILE_MODE: i32 = 0o400;

pub fn build(model: &ValidatedMonitor) -> Option<Deployment> {
    let sim = model.simulator.as_ref()?;
    let env_vars = vec![
        env(
            "COAP_SERVER",
            format!("{}:{COAPS_PORT}", model.names.coap_server),
        ),
        env("SIM_KEYS_DIR", KEYS_DIR),
        env("SIM_SENSORS", sim.sensors.to_string()),
        env("SIM_PLACES", sim.places.join(",")),
        env("SIM_INTERVAL_SECONDS", sim.interval_seconds.to_string()),
    ];
    let mut container =
        workload_container("sensor-sim", &sim.image, &sim.resources, vec![], env_vars);
    let (volume, mount) = own_keys(model, sim);
    container.volume_mounts = Some(vec![mount]);
    Some(deployment(
        model,
        &model.names.simulator,
        Component::Simulator,
        Some(1),
        Rollout::Rolling,
        PodTemplateBuilder::new(
            model,
            Component::Simulator,
            WORKLOAD_UID,
            &sim.scheduling,
            vec![container],
        )
        .volumes(vec![volume])
        .build(),
    ))
}

/// The simulator's own keys from the devices Secret, and no other device's. Optional: a key
/// deleted for a rotation is missing for a moment, and the kubelet then leaves its file out
/// instead of failing the pod; the simulator waits for a missing file.
fn own_keys(model: &ValidatedMonitor, sim: &Simulator) -> (Volume, VolumeMount) {
    let items = sim
        .devices
        .iter()
        .map(|d| KeyToPath {
            key: d.name.clone(),
            path: d.name.clone(),
            ..KeyToPath::default()
        })
        .collect();
    (
        Volume {
            name: "device-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(model.names.devices.clone()),
                items: Some(items),
                optional: Some(true),
                default_mode: Some(KEY_FILE_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        VolumeMount {
            name: "device-keys".into(),
            mount_path: KEYS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    )
}
