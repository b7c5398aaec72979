//! The NetworkPolicies around one IotMonitor: every pod of the stack is denied all ingress and
//! egress by one policy, and each path the stack needs is allowed by another. Policies add up,
//! so each allow stays small and reads on its own.
//!
//! Every peer that names our pods names their namespace too (`podSelector` and
//! `namespaceSelector` in one peer): a pod elsewhere that copies our labels is not let in.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::constants::{
    COAP_PORT, COAPS_PORT, GRAFANA_PORT, INFLUX_PORT, INFLUX_RPC_PORT, WORKLOAD_HTTP_PORT,
};
use crate::controller::desired::labels::{
    Component, INSTANCE, MANAGED_BY, MANAGER, NAME, owned_meta, selector, stack_selector,
};
use crate::controller::validate::{
    ApiServer, BackupTarget, CoapSources, ContactPointKind, InfluxMode, Network, ValidatedMonitor,
};
use crate::crd::CoapSource;

/// The label every namespace carries with its own name (set by the API server).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The operator's own pods carry `app.kubernetes.io/name` with the chart's name.
const OPERATOR_NAME: &str = "iot-operator";

/// Ports the API server is usually reached on after its Service address is translated, for when
/// the operator could not read its endpoints.
const USUAL_API_PORTS: [i32; 2] = [443, 6443];

/// Every NetworkPolicy the monitor should have; none when policies are off.
pub fn build(model: &ValidatedMonitor) -> Vec<NetworkPolicy> {
    let Some(network) = &model.network else {
        return Vec::new();
    };
    let mut policies = vec![default_deny(model), dns(model), grafana(model)];
    policies.extend(influx_ingress(model));
    policies.push(influx_clients(model));
    policies.push(coap_server(model, network));
    policies.extend(simulator(model));
    policies.extend(aqi_ingestor(model));
    policies.extend(metrics(model, network));
    policies.extend(backup_pods(model));
    policies
}

/// The pods the operator runs for the monitor. Not every pod with the stack's labels: a load
/// test's Job carries them too (iot-loadtest), but not the operator's manager label, and is
/// nobody's to fence.
fn operator_pods(model: &ValidatedMonitor) -> LabelSelector {
    let mut labels = stack_selector(model);
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels_selector(labels)
}

/// Every pod of the stack: nothing in, nothing out, unless another policy allows it.
fn default_deny(model: &ValidatedMonitor) -> NetworkPolicy {
    policy(
        model,
        "default-deny",
        Component::Network,
        operator_pods(model),
        Vec::new(),
        Vec::new(),
    )
}

/// Every pod may ask DNS, on port 53 of any address: cluster DNS is not always a pod that a
/// selector can name (node-local caches listen on a link-local address, some clusters run it on
/// the host network), and port 53 carries nothing but DNS.
fn dns(model: &ValidatedMonitor) -> NetworkPolicy {
    let ports = vec![port("UDP", 53), port("TCP", 53)];
    policy(
        model,
        "dns",
        Component::Network,
        operator_pods(model),
        Vec::new(),
        vec![egress(Vec::new(), ports)],
    )
}

/// Grafana's UI is for people, from wherever they reach the cluster (a port-forward, an
/// Ingress controller in its own namespace): it asks for a login itself. Out, Grafana may reach
/// its contact points (see [`contact_points_egress`]).
fn grafana(model: &ValidatedMonitor) -> NetworkPolicy {
    policy(
        model,
        &model.names.grafana,
        Component::Grafana,
        component_selector(model, Component::Grafana),
        vec![ingress(Vec::new(), vec![port("TCP", GRAFANA_PORT)])],
        contact_points_egress(model),
    )
}

/// Where Grafana sends notifications: for webhook and Slack contact points, whose URLs live in
/// Secrets the operator never reads, any address on the webhooks' `port`s (443 by default) and
/// 443 (Slack's); the SMTP server's port for email ones, on its address alone when `smtp.host`
/// names an IP. None without contact points.
fn contact_points_egress(model: &ValidatedMonitor) -> Vec<NetworkPolicyEgressRule> {
    let Some(alerts) = &model.alerts else {
        return Vec::new();
    };
    let mut rules = Vec::new();
    let web_ports: std::collections::BTreeSet<i32> = alerts
        .contact_points
        .iter()
        .filter_map(|c| match c.kind {
            ContactPointKind::Webhook { port, .. } => Some(port),
            ContactPointKind::Slack { .. } => Some(SLACK_PORT),
            ContactPointKind::Email { .. } => None,
        })
        .collect();
    if !web_ports.is_empty() {
        let ports = web_ports.into_iter().map(|p| port("TCP", p)).collect();
        rules.push(egress(Vec::new(), ports));
    }
    let email = alerts
        .contact_points
        .iter()
        .any(|c| matches!(c.kind, ContactPointKind::Email { .. }));
    if let (true, Some(smtp)) = (email, &alerts.smtp) {
        let server = smtp_server(&smtp.host);
        let to = match server.host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip_block(&host_cidr(&ip.to_string()))],
            Err(_) => Vec::new(),
        };
        rules.push(egress(to, vec![port("TCP", server.port)]));
    }
    rules
}

/// The port of Slack's incoming webhooks (HTTPS).
const SLACK_PORT: i32 = 443;

/// The SMTP port when `smtp.host` has none (the schema requires one; submission's port).
const SMTP_PORT: i32 = 587;

/// The host and port of `spec.alerts.smtp.host` (`host:port`).
pub fn smtp_server(host_port: &str) -> Upstream {
    match host_port.rsplit_once(':') {
        Some((host, port)) => Upstream {
            host: host.to_owned(),
            port: port
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .map_or(SMTP_PORT, i32::from),
        },
        None => Upstream {
            host: host_port.to_owned(),
            port: SMTP_PORT,
        },
    }
}

/// The components that write to or read from InfluxDB.
fn influx_clients_of(model: &ValidatedMonitor) -> Vec<Component> {
    let mut clients = vec![Component::Grafana, Component::CoapServer];
    if model.aqi.is_some() {
        clients.push(Component::AqiIngestor);
    }
    clients
}

/// InfluxDB takes connections from Grafana, coap-server and the AQI ingestor of this monitor,
/// and from the operator's pods, which read its statistics for the storage forecast. Its
/// set-up script runs beside it and speaks to 127.0.0.1, which no policy sees.
fn influx_ingress(model: &ValidatedMonitor) -> Option<NetworkPolicy> {
    if model.influx.mode == InfluxMode::External {
        return None;
    }
    let mut from: Vec<NetworkPolicyPeer> = influx_clients_of(model)
        .into_iter()
        .map(|c| own_pods(model, c))
        .collect();
    from.extend(operator_peer(model));
    let mut rules = vec![ingress(from, vec![port("TCP", INFLUX_PORT)])];
    // The RPC port has no authentication: the backup pods back up through it, the restore pod
    // restores through it (and creates the databases over HTTP); no one else reaches it.
    if model.backup.is_some() {
        rules.push(ingress(
            vec![own_pods(model, Component::Backup)],
            vec![port("TCP", INFLUX_RPC_PORT)],
        ));
    }
    if model.restore.is_some() {
        rules.push(ingress(
            vec![own_pods(model, Component::Restore)],
            vec![port("TCP", INFLUX_PORT), port("TCP", INFLUX_RPC_PORT)],
        ));
    }
    Some(policy(
        model,
        &model.names.influxdb,
        Component::Influxdb,
        component_selector(model, Component::Influxdb),
        rules,
        Vec::new(),
    ))
}

/// The operator's pods (the chart's `app.kubernetes.io/name: iot-operator`) in the namespace
/// it runs in, when known.
fn operator_peer(model: &ValidatedMonitor) -> Option<NetworkPolicyPeer> {
    let namespace = model.network.as_ref()?.operator_namespace.clone()?;
    Some(NetworkPolicyPeer {
        namespace_selector: Some(labels_selector(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            namespace,
        )]))),
        pod_selector: Some(labels_selector(BTreeMap::from([(
            NAME.to_owned(),
            OPERATOR_NAME.to_owned(),
        )]))),
        ..NetworkPolicyPeer::default()
    })
}

/// The backup and restore pods may reach InfluxDB (HTTP and RPC) and, with an S3 destination,
/// its endpoint's port: that address alone when the endpoint names one, any address when it
/// names a host. Nothing may reach them.
fn backup_pods(model: &ValidatedMonitor) -> Option<NetworkPolicy> {
    if model.backup.is_none() && model.restore.is_none() {
        return None;
    }
    let pods = instance_pods_named(
        model,
        vec![
            Component::Backup.as_str().to_owned(),
            Component::Restore.as_str().to_owned(),
        ],
    );
    let mut rules = vec![egress(
        vec![own_pods(model, Component::Influxdb)],
        vec![port("TCP", INFLUX_PORT), port("TCP", INFLUX_RPC_PORT)],
    )];
    let endpoints = model
        .backup
        .iter()
        .map(|b| &b.target)
        .chain(model.restore.iter().map(|r| &r.target))
        .filter_map(|t| match t {
            Ok(BackupTarget::S3 { endpoint, .. }) => Some(upstream(endpoint)),
            _ => None,
        });
    for endpoint in endpoints {
        let to = match endpoint.host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![ip_block(&host_cidr(&ip.to_string()))],
            Err(_) => Vec::new(),
        };
        let rule = egress(to, vec![port("TCP", endpoint.port)]);
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    Some(policy(
        model,
        "backup",
        Component::Network,
        pods,
        Vec::new(),
        rules,
    ))
}

/// The monitor's pods whose component name is one of `names`.
fn instance_pods_named(model: &ValidatedMonitor, names: Vec<String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            INSTANCE.to_owned(),
            model.names.instance.clone(),
        )])),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: NAME.to_owned(),
            operator: "In".into(),
            values: Some(names),
        }]),
    }
}

/// Grafana, coap-server and the AQI ingestor may reach InfluxDB: its pods when the operator
/// runs it, or the external URL's port on any address (its address may change behind a name).
fn influx_clients(model: &ValidatedMonitor) -> NetworkPolicy {
    let names = influx_clients_of(model)
        .into_iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    let pods = instance_pods_named(model, names);
    let rule = match model.influx.mode {
        InfluxMode::Internal(_) => egress(
            vec![own_pods(model, Component::Influxdb)],
            vec![port("TCP", INFLUX_PORT)],
        ),
        InfluxMode::External => egress(
            Vec::new(),
            vec![port(
                "TCP",
                url_port(&model.influx.url).unwrap_or(INFLUX_PORT),
            )],
        ),
    };
    policy(
        model,
        "influxdb-clients",
        Component::Network,
        pods,
        Vec::new(),
        vec![rule],
    )
}

/// The CoAP ports of coap-server's container (after a Service's port is translated).
fn coap_ports(model: &ValidatedMonitor) -> Vec<NetworkPolicyPort> {
    let mut ports = vec![port("UDP", COAPS_PORT)];
    if model.coap.plaintext {
        ports.push(port("UDP", COAP_PORT));
    }
    ports
}

/// coap-server takes CoAP from the simulator and from the sources the spec allows, and may
/// reach the API server, whose device Secret and ConfigMap it watches.
fn coap_server(model: &ValidatedMonitor, network: &Network) -> NetworkPolicy {
    let ports = coap_ports(model);
    let mut rules = Vec::new();
    match &network.coap_sources {
        // One rule without peers admits every source; the simulator is among them.
        CoapSources::Any => rules.push(ingress(Vec::new(), ports)),
        CoapSources::OwnNamespace => rules.push(ingress(
            vec![NetworkPolicyPeer {
                namespace_selector: Some(own_namespace(model)),
                ..NetworkPolicyPeer::default()
            }],
            ports,
        )),
        CoapSources::Listed(sources) => {
            let mut from: Vec<NetworkPolicyPeer> =
                sources.iter().map(|s| coap_source(model, s)).collect();
            if model.simulator.is_some() {
                from.push(own_pods(model, Component::Simulator));
            }
            // An empty list would admit everyone; with no source and no simulator, none.
            if !from.is_empty() {
                rules.push(ingress(from, ports));
            }
        }
    }
    policy(
        model,
        &model.names.coap_server,
        Component::CoapServer,
        component_selector(model, Component::CoapServer),
        rules,
        vec![api_server_egress(network.api_server.as_ref())],
    )
}

/// One `coap.allowedSources` entry as a peer: a range, or pods by namespace and pod labels
/// (the monitor's own namespace when only pods are named).
fn coap_source(model: &ValidatedMonitor, source: &CoapSource) -> NetworkPolicyPeer {
    if let Some(cidr) = &source.cidr {
        return ip_block(cidr);
    }
    let namespace_selector = match &source.namespace_selector {
        Some(labels) => labels_selector(labels.clone()),
        None => own_namespace(model),
    };
    NetworkPolicyPeer {
        namespace_selector: Some(namespace_selector),
        pod_selector: source.pod_selector.clone().map(labels_selector),
        ..NetworkPolicyPeer::default()
    }
}

/// TCP to the API server's endpoints, or to any address on its usual ports when they are not
/// known.
fn api_server_egress(api_server: Option<&ApiServer>) -> NetworkPolicyEgressRule {
    match api_server {
        Some(api) if !api.addresses.is_empty() && !api.ports.is_empty() => egress(
            api.addresses
                .iter()
                .map(|a| ip_block(&host_cidr(a)))
                .collect(),
            api.ports.iter().map(|&p| port("TCP", p)).collect(),
        ),
        _ => egress(
            Vec::new(),
            USUAL_API_PORTS.iter().map(|&p| port("TCP", p)).collect(),
        ),
    }
}

/// The simulator may send CoAP to this monitor's coap-server, and nowhere else.
fn simulator(model: &ValidatedMonitor) -> Option<NetworkPolicy> {
    model.simulator.as_ref()?;
    Some(policy(
        model,
        &model.names.simulator,
        Component::Simulator,
        component_selector(model, Component::Simulator),
        Vec::new(),
        vec![egress(
            vec![own_pods(model, Component::CoapServer)],
            coap_ports(model),
        )],
    ))
}

/// The AQI ingestor may reach its upstream on the URL's port (443 for Sensor.Community): that
/// address alone when the URL names one, else any address, since the name's addresses are
/// outside the cluster and change. Ingress stays closed, so nothing can reach it but the
/// node's probes.
fn aqi_ingestor(model: &ValidatedMonitor) -> Option<NetworkPolicy> {
    let aqi = model.aqi.as_ref()?;
    let upstream = upstream(&aqi.source);
    let to = match upstream.host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip_block(&host_cidr(&ip.to_string()))],
        Err(_) => Vec::new(),
    };
    Some(policy(
        model,
        &model.names.aqi_ingestor,
        Component::AqiIngestor,
        component_selector(model, Component::AqiIngestor),
        Vec::new(),
        vec![egress(to, vec![port("TCP", upstream.port)])],
    ))
}

/// Where the AQI ingestor fetches from, or Grafana's SMTP server.
#[derive(Debug, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: i32,
}

/// Sensor.Community's files (`24h`, `5min`), served over HTTPS.
const SENSOR_COMMUNITY: &str = "data.sensor.community";

/// The host and port of an `aqi.source`: Sensor.Community's for `24h` and `5min`, the URL's
/// otherwise (its explicit port, or the scheme's).
pub fn upstream(source: &str) -> Upstream {
    let parsed = source
        .parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme().is_some() && u.host().is_some());
    match parsed {
        Some(uri) => Upstream {
            // The URI keeps an IPv6 host in its brackets.
            host: uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: uri
                .port_u16()
                .map(i32::from)
                .unwrap_or(if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                }),
        },
        None => Upstream {
            host: SENSOR_COMMUNITY.to_owned(),
            port: 443,
        },
    }
}

/// The explicit or scheme's port of an http(s) URL.
fn url_port(url: &str) -> Option<i32> {
    let uri = url.parse::<http::Uri>().ok()?;
    Some(match (uri.port_u16(), uri.scheme_str()) {
        (Some(port), _) => i32::from(port),
        (None, Some("https")) => 443,
        (None, _) => 80,
    })
}

/// The workloads' metrics port, from the namespaces the spec names (any pod in them).
fn metrics(model: &ValidatedMonitor, network: &Network) -> Option<NetworkPolicy> {
    let namespaces = network.metrics_namespaces.as_ref()?;
    let workloads = vec![
        Component::CoapServer.as_str().to_owned(),
        Component::Simulator.as_str().to_owned(),
        Component::AqiIngestor.as_str().to_owned(),
    ];
    let pods = instance_pods_named(model, workloads);
    let from = vec![NetworkPolicyPeer {
        namespace_selector: Some(labels_selector(namespaces.clone())),
        ..NetworkPolicyPeer::default()
    }];
    Some(policy(
        model,
        "metrics",
        Component::Network,
        pods,
        vec![ingress(from, vec![port("TCP", WORKLOAD_HTTP_PORT)])],
        Vec::new(),
    ))
}

/// A policy named `name` (or `<instance>-<name>` when `name` is not already a child's name)
/// over `pods`. Both policy types are always listed: an empty list of rules then denies, and
/// the default-deny policy is what makes that so for every pod anyway.
fn policy(
    model: &ValidatedMonitor,
    name: &str,
    component: Component,
    pods: LabelSelector,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    let prefix = format!("{}-", model.names.instance);
    let name = if name.starts_with(&prefix) {
        name.to_owned()
    } else {
        format!("{prefix}{name}")
    };
    let mut types = Vec::new();
    if !ingress.is_empty() || egress.is_empty() {
        types.push("Ingress".to_owned());
    }
    if !egress.is_empty() || ingress.is_empty() {
        types.push("Egress".to_owned());
    }
    NetworkPolicy {
        metadata: owned_meta(model, &name, component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(types),
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    }
}

fn ingress(
    from: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: (!from.is_empty()).then_some(from),
        ports: Some(ports),
    }
}

fn egress(to: Vec<NetworkPolicyPeer>, ports: Vec<NetworkPolicyPort>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: (!to.is_empty()).then_some(to),
        ports: Some(ports),
    }
}

fn port(protocol: &str, number: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.to_owned()),
        ..NetworkPolicyPort::default()
    }
}

fn labels_selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

fn component_selector(model: &ValidatedMonitor, component: Component) -> LabelSelector {
    labels_selector(selector(model, component))
}

/// The monitor's namespace, by the name label the API server sets on every namespace.
fn own_namespace(model: &ValidatedMonitor) -> LabelSelector {
    labels_selector(BTreeMap::from([(
        NAMESPACE_NAME_LABEL.to_owned(),
        model.namespace.clone(),
    )]))
}

/// A component's pods of this monitor, in this monitor's namespace only.
fn own_pods(model: &ValidatedMonitor, component: Component) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(own_namespace(model)),
        pod_selector: Some(component_selector(model, component)),
        ..NetworkPolicyPeer::default()
    }
}

fn ip_block(cidr: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// One address as a range of one.
fn host_cidr(address: &str) -> String {
    if address.contains(':') {
        format!("{address}/128")
    } else {
        format!("{address}/32")
    }
}
