//! Pod-level building blocks every component shares: the `restricted` Pod Security Standard,
//! resources, probes and environment variables.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::constants::WORKLOAD_HTTP_PORT;
use crate::controller::validate::{Influx, InfluxMode};
use crate::crd::ResourcesSpec;

/// Pod security context satisfying the `restricted` Pod Security Standard.
pub fn pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Container security context satisfying the `restricted` Pod Security Standard, with a
/// read-only root filesystem (writable paths are mounted explicitly).
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

pub fn resources(spec: &ResourcesSpec) -> ResourceRequirements {
    let mut limits = BTreeMap::from([("memory".to_owned(), Quantity(spec.memory_limit.clone()))]);
    if let Some(cpu) = &spec.cpu_limit {
        limits.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(spec.cpu_request.clone())),
            ("memory".to_owned(), Quantity(spec.memory_request.clone())),
        ])),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A variable from the pod's own fields (the downward API), such as `metadata.namespace`.
pub fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// What a workload needs to write into `database`: the URL, the database, whether it may
/// create it, and the writer's credentials from their Secret.
pub fn influx_writer_env(influx: &Influx, database: &str) -> Vec<EnvVar> {
    let writer = &influx.writer;
    vec![
        env("INFLUX_URL", influx.url.clone()),
        env("INFLUX_DB", database),
        // Our writer is not an InfluxDB admin: the setup sidecar creates the databases. An
        // external endpoint is the user's, so the workloads may create their database there.
        env(
            "CREATE_DATABASE",
            (influx.mode == InfluxMode::External).to_string(),
        ),
        env_from_secret("INFLUX_USERNAME", &writer.secret, &writer.username_key),
        env_from_secret("INFLUX_PASSWORD", &writer.secret, &writer.password_key),
    ]
}

pub fn http_probe(path: &str, port: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(port.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

pub fn tcp_port(name: &str, port: i32) -> ContainerPort {
    container_port(name, "TCP", port)
}

pub fn udp_port(name: &str, port: i32) -> ContainerPort {
    container_port(name, "UDP", port)
}

fn container_port(name: &str, protocol: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some(protocol.to_owned()),
        ..ContainerPort::default()
    }
}

/// An emptyDir volume and its mount, for paths a read-only-root container must write.
pub fn scratch(name: &str, path: &str) -> (Volume, VolumeMount) {
    (
        Volume {
            name: name.to_owned(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        },
        VolumeMount {
            name: name.to_owned(),
            mount_path: path.to_owned(),
            ..VolumeMount::default()
        },
    )
}

/// One of our own workloads (coap-server, sensor-sim, aqi-ingestor): same HTTP side port,
/// probes, logging and hardening; `env` carries what differs.
pub fn workload_container(
    name: &str,
    image: &str,
    spec: &ResourcesSpec,
    mut extra_ports: Vec<ContainerPort>,
    env_vars: Vec<EnvVar>,
) -> Container {
    let mut ports = vec![tcp_port("http", WORKLOAD_HTTP_PORT)];
    ports.append(&mut extra_ports);
    let mut all_env = vec![
        env("HTTP_ADDR", format!("0.0.0.0:{WORKLOAD_HTTP_PORT}")),
        env("LOG_FORMAT", "json"),
        env("RUST_LOG", "info"),
    ];
    all_env.extend(env_vars);
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(ports),
        env: Some(all_env),
        resources: Some(resources(spec)),
        security_context: Some(container_security()),
        liveness_probe: Some(http_probe("/healthz", "http", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", "http", 5, 2)),
        ..Container::default()
    }
}
