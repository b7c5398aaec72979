//! Services that expose components, and the NetworkPolicies that fence the stack in
//! ([`policies`]).

pub(crate) mod policies;
#[cfg(test)]
mod tests;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{Component, owned_meta, selector};
use crate::controller::validate::ValidatedMonitor;
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
