//! Where the API server answers, for the NetworkPolicy that lets coap-server watch its device
//! registry. A policy sees a connection after the `kubernetes` Service's address is translated,
//! so it must name the endpoints, which only the cluster knows: read once, at start.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};

use super::validate::ApiServer;
use crate::error::concise;

/// The `kubernetes` Service's EndpointSlices in `default`; `None` when they cannot be read (no
/// permission, or none there): coap-server's policy then allows the usual API ports anywhere.
pub async fn discover(client: &Client) -> Option<ApiServer> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let params = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    match api.list(&params).await {
        Ok(list) => {
            let found = endpoints(&list.items);
            if found.addresses.is_empty() || found.ports.is_empty() {
                tracing::warn!(
                    "the kubernetes Service has no endpoints: coap-server's NetworkPolicy allows TCP 443 and 6443 to any address"
                );
                return None;
            }
            tracing::info!(addresses = ?found.addresses, ports = ?found.ports, "the API server's endpoints, for coap-server's NetworkPolicy");
            Some(found)
        }
        Err(error) => {
            tracing::warn!(error = %concise(&error), "cannot read the kubernetes Service's EndpointSlices: coap-server's NetworkPolicy allows TCP 443 and 6443 to any address");
            None
        }
    }
}

/// Every address and port of the slices, sorted and without repeats (pure).
pub fn endpoints(slices: &[EndpointSlice]) -> ApiServer {
    let mut addresses: Vec<String> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    let mut ports: Vec<i32> = slices
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| p.port)
        .collect();
    addresses.sort();
    addresses.dedup();
    ports.sort_unstable();
    ports.dedup();
    ApiServer { addresses, ports }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ports_of_every_slice_once() {
        let slices: Vec<EndpointSlice> = serde_yaml::from_str(
            "
- addressType: IPv4
  metadata: {name: kubernetes}
  endpoints: [{addresses: [198.19.0.254]}, {addresses: [198.19.0.253]}]
  ports: [{name: https, port: 6443, protocol: TCP}]
- addressType: IPv4
  metadata: {name: kubernetes-2}
  endpoints: [{addresses: [198.19.0.254]}]
  ports: [{name: https, port: 6443, protocol: TCP}]
",
        )
        .expect("slices");
        assert_eq!(
            endpoints(&slices),
            ApiServer {
                addresses: vec!["198.19.0.253".into(), "198.19.0.254".into()],
                ports: vec![6443],
            }
        );
    }

    #[test]
    fn no_slices_no_endpoints() {
        assert_eq!(endpoints(&[]), ApiServer::default());
    }
}
