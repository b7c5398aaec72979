//! The CoAP ingest server: a Deployment (autoscaled) and its UDP Service. It speaks CoAP over
//! DTLS to the devices of the registry (`devices`), which it follows through the API server
//! under its own service account (`access`); plain CoAP only when the spec turns it on.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

use super::labels::Component;
use super::network::{exposed_service, service_port};
use super::pod::{env, field_env, influx_writer_env, udp_port, workload_container};
use super::template::PodTemplateBuilder;
use super::workload::{Rollout, deployment};
use crate::constants::{COAP_PORT, COAPS_PORT, WORKLOAD_UID};
use crate::controller::validate::{InfluxMode, ValidatedMonitor};
use crate::crd::ServiceType;

/// After SIGTERM the server writes and answers what is queued for at most this long, then
/// exits; readings still unwritten are left unanswered, so their senders retry elsewhere.
const DRAIN_SECONDS: i64 = 20;
/// What the exit needs beside the drain (the side port, the last log lines), within the
/// pod's grace period: the kubelet's SIGKILL must never cut a drain short.
const DRAIN_MARGIN_SECONDS: i64 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct CoapObjects {
    pub service: Service,
    pub deployment: Deployment,
}

pub fn build(model: &ValidatedMonitor) -> CoapObjects {
    let coap = &model.coap;
    let mut env_vars = vec![
        env("COAP_BIND", format!("0.0.0.0:{COAP_PORT}")),
        env("BATCH_SIZE", coap.batch.size.to_string()),
        env("BATCH_LINGER_MS", coap.batch.linger_ms.to_string()),
    ];
    env_vars.extend(influx_writer_env(&model.influx, &model.influx.dht_db));
    if let InfluxMode::Internal(internal) = &model.influx.mode {
        // A `ts=` older than the retention is refused up front (4.00), not sent to be dropped.
        env_vars.push(env("INFLUX_RETENTION", internal.retention.dht.clone()));
    }
    env_vars.push(env("DRAIN_SECONDS", DRAIN_SECONDS.to_string()));
    env_vars.push(env("RATE_LIMIT", coap.rate_limit_per_source.to_string()));
    env_vars.extend([
        env("COAP_DTLS_BIND", format!("0.0.0.0:{COAPS_PORT}")),
        env("COAP_PLAINTEXT", coap.plaintext.to_string()),
        env("DEVICES_FROM", model.names.devices.clone()),
        // The registry is in the pod's own namespace; said outright rather than left to the
        // token's, so a test or a debugger running the binary elsewhere reads the same.
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ]);
    let mut ports = vec![udp_port("coaps", COAPS_PORT)];
    if coap.plaintext {
        ports.push(udp_port("coap", COAP_PORT));
    }
    let container =
        workload_container("coap-server", &coap.image, &coap.resources, ports, env_vars);
    let replicas = model.autoscaling.is_none().then_some(coap.replicas.min);
    let mut service_ports = vec![service_port(
        ("coaps", "UDP", COAPS_PORT),
        coap.dtls_node_port,
    )];
    if coap.plaintext {
        service_ports.push(service_port(("coap", "UDP", coap.port), coap.node_port));
    }
    let mut service = exposed_service(
        model,
        &model.names.coap_server,
        Component::CoapServer,
        coap.service_type,
        service_ports,
    );
    if let Some(spec) = service.spec.as_mut()
        && coap.service_type != ServiceType::ClusterIP
    {
        // The server's per-source limits and its guard against reflection need each sender's
        // real address; a node that forwards to a pod on another node would replace it with
        // its own (SNAT). The cost: a node without a coap-server pod drops what it receives.
        spec.external_traffic_policy = Some("Local".into());
    }
    CoapObjects {
        service,
        deployment: deployment(
            model,
            &model.names.coap_server,
            Component::CoapServer,
            replicas,
            Rollout::Rolling,
            PodTemplateBuilder::new(
                model,
                Component::CoapServer,
                WORKLOAD_UID,
                &coap.scheduling,
                vec![container],
            )
            .termination_grace_period_seconds(DRAIN_SECONDS + DRAIN_MARGIN_SECONDS)
            .service_account(&model.names.coap_server)
            .build(),
        ),
    }
}
