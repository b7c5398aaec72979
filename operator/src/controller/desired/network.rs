//! Services that expose components, and the NetworkPolicy that keeps InfluxDB private to the
//! stack's own pods.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{Component, owned_meta, selector, stack_selector};
use crate::constants::INFLUX_PORT;
use crate::controller::validate::{InfluxMode, ValidatedMonitor};
use crate::crd::ServiceType;

/// A Service port `(name, protocol, port)` whose target is the container port of the same
/// name, on `node_port` of every node if the Service is exposed there and one is given.
pub fn service_port(
    (port_name, protocol, port): (&str, &str, i32),
    node_port: Option<i32>,
) -> ServicePort {
    ServicePort {
        name: Some(port_name.to_owned()),
        port,
        protocol: Some(protocol.to_owned()),
        target_port: Some(IntOrString::String(port_name.to_owned())),
        node_port,
        ..ServicePort::default()
    }
}

/// A Service of the requested type with `ports` (see [`service_port`]).
pub fn exposed_service(
    model: &ValidatedMonitor,
    name: &str,
    component: Component,
    service_type: ServiceType,
    ports: Vec<ServicePort>,
) -> Service {
    let type_ = match service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };
    Service {
        metadata: owned_meta(model, name, component),
        spec: Some(ServiceSpec {
            type_: Some(type_.into()),
            selector: Some(selector(model, component)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// InfluxDB accepts connections only from the pods of the same IotMonitor (Grafana and the
/// workloads). Nothing else in the cluster can reach the database, even with credentials.
pub fn influx_policy(model: &ValidatedMonitor) -> Option<NetworkPolicy> {
    if model.influx.mode == InfluxMode::External {
        return None;
    }
    Some(NetworkPolicy {
        metadata: owned_meta(model, &model.names.influxdb, Component::Influxdb),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(model, Component::Influxdb)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(stack_selector(model)),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(INFLUX_PORT)),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    })
}
