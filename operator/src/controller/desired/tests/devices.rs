//! The device registry's side of the pods: coap-server follows it under its own account and
//! opens plain CoAP only when asked; the simulator sends over DTLS with its own keys only.

use k8s_openapi::api::core::v1::PodSpec;

use super::*;

fn pod_of(objects: &DesiredObjects, deployment: &str) -> PodSpec {
    objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(deployment))
        .and_then(|d| d.spec.template.spec.clone())
        .expect("pod spec")
}

/// `name/protocol/port` of each port of a container.
fn container_ports(container: &Container) -> Vec<String> {
    let ports = container.ports.iter().flatten();
    ports
        .map(|p| described(&p.name, &p.protocol, p.container_port))
        .collect()
}

/// `name/protocol/port` of each port of the coap-server Service.
fn service_ports(objects: &DesiredObjects) -> Vec<String> {
    let spec = coap_service(objects).spec.clone().unwrap_or_default();
    let ports = spec.ports.into_iter().flatten();
    ports
        .map(|p| described(&p.name, &p.protocol, p.port))
        .collect()
}

fn described(name: &Option<String>, protocol: &Option<String>, port: i32) -> String {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    format!("{}/{}/{port}", text(name), text(protocol))
}

fn coap_service(objects: &DesiredObjects) -> &k8s_openapi::api::core::v1::Service {
    objects
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("lab-coap-server"))
        .expect("coap-server Service")
}

#[test]
fn coap_server_follows_the_registry_under_its_own_account() {
    let objects = desired("{}");
    let pod = pod_of(&objects, "lab-coap-server");
    assert_eq!(pod.service_account_name.as_deref(), Some("lab-coap-server"));
    assert_eq!(pod.automount_service_account_token, Some(true));
    let coap = &pod.containers[0];
    assert_eq!(
        env_value(coap, "DEVICES_FROM").as_deref(),
        Some("lab-devices")
    );
    assert_eq!(env_value(coap, "COAP_PLAINTEXT").as_deref(), Some("false"));
    assert_eq!(
        env_value(coap, "COAP_DTLS_BIND").as_deref(),
        Some("0.0.0.0:5684")
    );
    let namespace = coap
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAMESPACE")
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(namespace, Some("metadata.namespace"));
    assert_eq!(container_ports(coap), ["http/TCP/9090", "coaps/UDP/5684"]);
}

#[test]
fn the_service_has_coaps_and_plain_coap_only_when_asked() {
    assert_eq!(service_ports(&desired("{}")), ["coaps/UDP/5684"]);

    let open = desired("{coap: {plaintext: true, port: 5700}}");
    assert_eq!(service_ports(&open), ["coaps/UDP/5684", "coap/UDP/5700"]);
    let coap = &pod_of(&open, "lab-coap-server").containers[0];
    assert_eq!(env_value(coap, "COAP_PLAINTEXT").as_deref(), Some("true"));
    assert_eq!(
        container_ports(coap),
        ["http/TCP/9090", "coaps/UDP/5684", "coap/UDP/5683"]
    );
}

#[test]
fn coaps_gets_its_own_node_port() {
    let objects = desired("{coap: {serviceType: NodePort, dtlsNodePort: 30684}}");
    let spec = coap_service(&objects).spec.clone().expect("spec");
    let ports = spec.ports.expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].node_port, Some(30684));
}

#[test]
fn the_simulator_sends_over_dtls_with_its_own_keys_only() {
    let objects =
        desired("{coap: {devices: [{name: door, place: hall}]}, simulator: {sensors: 3}}");
    let pod = pod_of(&objects, "lab-sensor-sim");
    let sim = &pod.containers[0];
    assert_eq!(
        env_value(sim, "COAP_SERVER").as_deref(),
        Some("lab-coap-server:5684")
    );
    assert_eq!(
        env_value(sim, "SIM_KEYS_DIR").as_deref(),
        Some("/var/run/iot/devices")
    );
    let volumes = pod.volumes.expect("volumes");
    assert_eq!(volumes.len(), 1);
    let secret = volumes[0].secret.as_ref().expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("lab-devices"));
    assert_eq!(
        secret.optional,
        Some(true),
        "a key being rotated is missing a moment"
    );
    assert_eq!(secret.default_mode, Some(0o400));
    let keys: Vec<(&str, &str)> = secret
        .items
        .iter()
        .flatten()
        .map(|i| (i.key.as_str(), i.path.as_str()))
        .collect();
    assert_eq!(
        keys,
        [("sim-1", "sim-1"), ("sim-2", "sim-2"), ("sim-3", "sim-3")],
        "not door's key"
    );
    let mounts = sim.volume_mounts.as_ref().expect("mounts");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_path, "/var/run/iot/devices");
    assert_eq!(mounts[0].read_only, Some(true));
    // The files are the owner's (root) only, but the kubelet gives them to the pod's fsGroup
    // with group read added: the simulator's user must be in that group.
    let security = pod.security_context.expect("pod security");
    assert_eq!(security.fs_group, security.run_as_group);
    assert!(security.fs_group.is_some());
}

#[test]
fn the_registry_and_coap_servers_access_are_built_with_the_stack() {
    let objects = desired("{}");
    assert_eq!(names(&objects.service_accounts), ["lab-coap-server"]);
    assert_eq!(names(&objects.roles), ["lab-coap-server"]);
    assert_eq!(names(&objects.role_bindings), ["lab-coap-server"]);
    assert_eq!(
        objects.devices.places.metadata.name.as_deref(),
        Some("lab-devices")
    );
    assert_eq!(
        objects.devices.names.len(),
        4,
        "the simulator's four sensors"
    );
    // The places are not in `config_maps`: they are applied after the keys.
    assert!(!names(&objects.config_maps).contains(&"lab-devices".to_owned()));
}

#[test]
fn no_key_is_in_any_configmap() {
    let objects = desired("{coap: {devices: [{name: door, place: hall}]}}");
    let places = objects.devices.places.data.clone().expect("places");
    assert_eq!(places["door"], "hall");
    assert!(objects.devices.keys.data.is_none() && objects.devices.keys.string_data.is_none());
}
