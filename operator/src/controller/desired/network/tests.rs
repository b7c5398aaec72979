//! The NetworkPolicies, from small specs: which pods each selects, and whom it lets through.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use serde_json::{Value, json};

use super::policies::{NAMESPACE_NAME_LABEL, Upstream, build, smtp_server, upstream};
use crate::controller::fixtures::model;
use crate::controller::validate::ApiServer;

fn policies(spec: &str) -> Vec<NetworkPolicy> {
    build(&model(spec))
}

fn names(policies: &[NetworkPolicy]) -> Vec<String> {
    policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn named<'a>(policies: &'a [NetworkPolicy], name: &str) -> &'a NetworkPolicy {
    policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no policy {name} in {:?}", names(policies)))
}

/// A policy's spec as JSON, for terse assertions on its shape.
fn spec(policy: &NetworkPolicy) -> Value {
    serde_json::to_value(policy.spec.as_ref().expect("spec")).expect("json")
}

fn ports(ports: &[NetworkPolicyPort]) -> Vec<String> {
    ports
        .iter()
        .map(|p| {
            let number = match &p.port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    n.to_string()
                }
                other => format!("{other:?}"),
            };
            format!("{}/{number}", p.protocol.as_deref().unwrap_or("TCP"))
        })
        .collect()
}

fn every_peer(policy: &NetworkPolicy) -> Vec<NetworkPolicyPeer> {
    let spec = policy.spec.as_ref().expect("spec");
    let from = spec
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.from.iter().flatten());
    let to = spec
        .egress
        .iter()
        .flatten()
        .flat_map(|r| r.to.iter().flatten());
    from.chain(to).cloned().collect()
}

#[test]
fn the_default_spec_has_a_default_deny_and_one_allow_per_path() {
    let all = policies("{}");
    assert_eq!(
        names(&all),
        [
            "lab-default-deny",
            "lab-dns",
            "lab-grafana",
            "lab-influxdb",
            "lab-influxdb-clients",
            "lab-coap-server",
            "lab-sensor-sim",
            "lab-aqi-ingestor",
        ]
    );
    assert_eq!(
        spec(named(&all, "lab-default-deny")),
        json!({
            "podSelector": {"matchLabels": {
                "app.kubernetes.io/instance": "lab",
                "app.kubernetes.io/managed-by": "iot-operator",
                "app.kubernetes.io/part-of": "iot-monitor"
            }},
            "policyTypes": ["Ingress", "Egress"]
        })
    );
}

#[test]
fn the_default_deny_fences_every_pod_the_operator_runs_and_no_other() {
    let objects = crate::controller::desired::build(&model("{}"));
    let deny = spec(named(&objects.network_policies, "lab-default-deny"));
    let wanted = deny["podSelector"]["matchLabels"]
        .as_object()
        .expect("labels")
        .clone();
    let templates = objects
        .deployments
        .iter()
        .map(|d| d.spec.template.metadata.clone())
        .chain(
            objects
                .stateful_sets
                .iter()
                .map(|s| s.spec.template.metadata.clone()),
        );
    let mut fenced = 0;
    for meta in templates {
        let labels = meta.and_then(|m| m.labels).expect("pod labels");
        for (key, value) in &wanted {
            assert_eq!(
                labels.get(key).map(String::as_str),
                value.as_str(),
                "{labels:?}"
            );
        }
        fenced += 1;
    }
    assert_eq!(
        fenced, 5,
        "grafana, coap-server, simulator, ingestor, influxdb"
    );
}

#[test]
fn turned_off_there_is_no_policy() {
    assert!(policies("{networkPolicy: {enabled: false}}").is_empty());
}

#[test]
fn every_peer_that_names_pods_names_their_namespace_too() {
    let all = policies(
        "{coap: {allowedSources: [{podSelector: {role: sensor}}]},
          networkPolicy: {metricsNamespaceSelector: {team: ops}}}",
    );
    let mut peers_with_pods = 0;
    for policy in &all {
        for peer in every_peer(policy) {
            if peer.pod_selector.is_some() {
                peers_with_pods += 1;
                let ns = peer.namespace_selector.expect("a namespace with the pods");
                let labels = ns.match_labels.expect("matched by label");
                assert_eq!(
                    labels.get(NAMESPACE_NAME_LABEL).map(String::as_str),
                    Some("iot"),
                    "{:?}",
                    policy.metadata.name
                );
            }
        }
    }
    // influxdb (3 clients), influxdb-clients, coap-server (sensor pods, simulator), sensor-sim
    assert_eq!(peers_with_pods, 7);
}

#[test]
fn influxdb_takes_its_clients_only_and_only_on_its_port() {
    let all = policies("{}");
    let influx = spec(named(&all, "lab-influxdb"));
    let from: Vec<&str> = influx["ingress"][0]["from"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                .as_str()
                .expect("name")
        })
        .collect();
    assert_eq!(from, ["grafana", "coap-server", "aqi-ingestor"]);
    assert_eq!(
        influx["ingress"][0]["ports"],
        json!([{"port": 8086, "protocol": "TCP"}])
    );
    assert_eq!(influx["policyTypes"], json!(["Ingress"]));

    let without_aqi = policies("{aqi: {enabled: false}}");
    let influx = spec(named(&without_aqi, "lab-influxdb"));
    assert_eq!(
        influx["ingress"][0]["from"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(!names(&without_aqi).contains(&"lab-aqi-ingestor".to_owned()));
}

#[test]
fn the_operators_pods_may_read_influxdb_from_their_own_namespace_only() {
    let with = build(&model("{}").with_operator_namespace(Some("iot-system".into())));
    let influx = spec(named(&with, "lab-influxdb"));
    let peers = influx["ingress"][0]["from"].as_array().expect("peers");
    assert_eq!(peers.len(), 4);
    assert_eq!(
        peers[3],
        json!({
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "iot-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "iot-operator"}},
        })
    );
    assert_eq!(
        influx["ingress"][0]["ports"],
        json!([{"port": 8086, "protocol": "TCP"}])
    );
}

#[test]
fn the_clients_may_reach_influxdb_pods_or_the_external_port() {
    let all = policies("{}");
    let clients = spec(named(&all, "lab-influxdb-clients"));
    assert_eq!(
        clients["podSelector"]["matchExpressions"][0]["values"],
        json!(["grafana", "coap-server", "aqi-ingestor"])
    );
    assert_eq!(
        clients["egress"][0]["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "influxdb"
    );

    let external = policies(
        "{influxdb: {external: {url: 'https://influx.example:9443', credentialsSecret: creds}}}",
    );
    assert!(!names(&external).contains(&"lab-influxdb".to_owned()));
    let clients = spec(named(&external, "lab-influxdb-clients"));
    assert_eq!(
        clients["egress"],
        json!([{"ports": [{"port": 9443, "protocol": "TCP"}]}])
    );
}

#[test]
fn coap_sources_follow_the_service_type_unless_listed() {
    let cluster_ip = policies("{}");
    let coap = named(&cluster_ip, "lab-coap-server");
    let rule = &coap
        .spec
        .as_ref()
        .expect("spec")
        .ingress
        .as_ref()
        .expect("ingress")[0];
    assert_eq!(
        ports(rule.ports.as_deref().unwrap_or_default()),
        ["UDP/5684"]
    );
    assert_eq!(
        spec(coap)["ingress"][0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "iot"}}}])
    );

    let node_port = policies("{coap: {serviceType: NodePort, plaintext: true}}");
    let coap = spec(named(&node_port, "lab-coap-server"));
    assert_eq!(coap["ingress"][0].get("from"), None, "any source");
    assert_eq!(
        coap["ingress"][0]["ports"],
        json!([{"port": 5684, "protocol": "UDP"}, {"port": 5683, "protocol": "UDP"}])
    );

    let listed = policies(
        "{coap: {serviceType: NodePort, allowedSources: [
            {cidr: 192.0.2.0/24},
            {namespaceSelector: {site: lab}, podSelector: {role: sensor}}]}}",
    );
    let coap = spec(named(&listed, "lab-coap-server"));
    let from = &coap["ingress"][0]["from"];
    assert_eq!(from[0], json!({"ipBlock": {"cidr": "192.0.2.0/24"}}));
    assert_eq!(
        from[1],
        json!({"namespaceSelector": {"matchLabels": {"site": "lab"}},
               "podSelector": {"matchLabels": {"role": "sensor"}}})
    );
    assert_eq!(
        from[2]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "sensor-sim",
        "the simulator may always send"
    );
}

#[test]
fn an_empty_source_list_without_the_simulator_closes_coap() {
    let all = policies("{simulator: {enabled: false}, coap: {allowedSources: []}}");
    let coap = spec(named(&all, "lab-coap-server"));
    assert_eq!(coap.get("ingress"), None);
    assert_eq!(coap["policyTypes"], json!(["Egress"]));
}

#[test]
fn coap_server_reaches_the_api_server_at_its_endpoints_or_its_usual_ports() {
    let unknown = policies("{}");
    assert_eq!(
        spec(named(&unknown, "lab-coap-server"))["egress"],
        json!([{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}])
    );

    let known = model("{}").with_api_server(Some(ApiServer {
        addresses: vec!["198.19.0.254".into()],
        ports: vec![34567],
    }));
    let all = build(&known);
    assert_eq!(
        spec(named(&all, "lab-coap-server"))["egress"],
        json!([{"to": [{"ipBlock": {"cidr": "198.19.0.254/32"}}],
                "ports": [{"port": 34567, "protocol": "TCP"}]}])
    );
}

#[test]
fn the_aqi_ingestor_reaches_its_upstream_only() {
    let default = spec(named(&policies("{}"), "lab-aqi-ingestor"));
    assert_eq!(
        default["egress"],
        json!([{"ports": [{"port": 443, "protocol": "TCP"}]}])
    );
    assert_eq!(default["policyTypes"], json!(["Egress"]));

    let literal = spec(named(
        &policies("{aqi: {source: 'http://198.19.3.254:41234/data.24h.json'}}"),
        "lab-aqi-ingestor",
    ));
    assert_eq!(
        literal["egress"],
        json!([{"to": [{"ipBlock": {"cidr": "198.19.3.254/32"}}],
                "ports": [{"port": 41234, "protocol": "TCP"}]}])
    );
}

#[test]
fn upstreams_of_every_kind_of_source() {
    let up = |host: &str, port| Upstream {
        host: host.into(),
        port,
    };
    assert_eq!(upstream("24h"), up("data.sensor.community", 443));
    assert_eq!(upstream("5min"), up("data.sensor.community", 443));
    assert_eq!(
        upstream("https://feed.example/x.json"),
        up("feed.example", 443)
    );
    assert_eq!(
        upstream("http://feed.example/x.json"),
        up("feed.example", 80)
    );
    assert_eq!(
        upstream("http://feed.example:8080/x"),
        up("feed.example", 8080)
    );
    assert_eq!(upstream("http://[2001:db8::1]:81/x"), up("2001:db8::1", 81));
}

#[test]
fn metrics_ports_open_to_the_namespaces_the_spec_names() {
    assert!(!names(&policies("{}")).contains(&"lab-metrics".to_owned()));
    let all = policies("{networkPolicy: {metricsNamespaceSelector: {team: ops}}}");
    let metrics = spec(named(&all, "lab-metrics"));
    assert_eq!(
        metrics["ingress"],
        json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
                "ports": [{"port": 9090, "protocol": "TCP"}]}])
    );
    assert_eq!(
        metrics["podSelector"]["matchExpressions"][0]["values"],
        json!(["coap-server", "sensor-sim", "aqi-ingestor"])
    );
}

#[test]
fn dns_is_open_to_every_pod_on_port_53_only() {
    let dns = spec(named(&policies("{}"), "lab-dns"));
    assert_eq!(
        dns["egress"],
        json!([{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}])
    );
    assert_eq!(dns["policyTypes"], json!(["Egress"]));
}

#[test]
fn grafana_sends_nowhere_without_contact_points() {
    for spec_yaml in [
        "{}",
        "{alerts: {enabled: false}}",
        "{alerts: {smtp: {host: 'mx.example:25', fromAddress: a@b.c}}}",
    ] {
        let grafana = spec(named(&policies(spec_yaml), "lab-grafana"));
        assert_eq!(grafana["policyTypes"], json!(["Ingress"]), "{spec_yaml}");
        assert_eq!(grafana.get("egress"), None, "{spec_yaml}");
    }
}

#[test]
fn grafana_reaches_webhook_and_slack_contact_points_on_https() {
    let all = policies(
        "{alerts: {contactPoints: [
            {name: hook, webhook: {urlSecret: {name: hooks, key: ops}}},
            {name: chat, slack: {urlSecret: {name: hooks, key: slack}}}]}}",
    );
    let grafana = spec(named(&all, "lab-grafana"));
    assert_eq!(grafana["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        grafana["egress"],
        json!([{"ports": [{"port": 443, "protocol": "TCP"}]}])
    );
    // The UI stays open as before.
    assert_eq!(
        grafana["ingress"],
        json!([{"ports": [{"port": 3000, "protocol": "TCP"}]}])
    );
}

#[test]
fn grafana_reaches_a_webhook_on_the_port_its_spec_names() {
    let all = policies(
        "{alerts: {contactPoints: [
            {name: am, webhook: {urlSecret: {name: hooks, key: am}, port: 9093}},
            {name: hook, webhook: {urlSecret: {name: hooks, key: ops}}},
            {name: chat, slack: {urlSecret: {name: hooks, key: slack}}}]}}",
    );
    let grafana = spec(named(&all, "lab-grafana"));
    // One rule, each port once.
    assert_eq!(
        grafana["egress"],
        json!([{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 9093, "protocol": "TCP"}]}])
    );
}

#[test]
fn grafana_reaches_the_smtp_servers_port_for_email_contact_points() {
    let by_name = spec(named(
        &policies(
            "{alerts: {contactPoints: [{name: mail, email: {addresses: [a@b.c]}}],
                       smtp: {host: 'mx.example:2525', fromAddress: a@b.c}}}",
        ),
        "lab-grafana",
    ));
    assert_eq!(
        by_name["egress"],
        json!([{"ports": [{"port": 2525, "protocol": "TCP"}]}])
    );

    let by_address = spec(named(
        &policies(
            "{alerts: {contactPoints: [
                {name: mail, email: {addresses: [a@b.c]}},
                {name: hook, webhook: {urlSecret: {name: hooks, key: ops}}}],
              smtp: {host: '198.19.4.25:25', fromAddress: a@b.c}}}",
        ),
        "lab-grafana",
    ));
    assert_eq!(
        by_address["egress"],
        json!([
            {"ports": [{"port": 443, "protocol": "TCP"}]},
            {"to": [{"ipBlock": {"cidr": "198.19.4.25/32"}}],
             "ports": [{"port": 25, "protocol": "TCP"}]}
        ])
    );
}

#[test]
fn smtp_hosts_split_into_host_and_port() {
    let up = |host: &str, port| Upstream {
        host: host.into(),
        port,
    };
    assert_eq!(smtp_server("mx.example:25"), up("mx.example", 25));
    assert_eq!(smtp_server("10.0.0.1:465"), up("10.0.0.1", 465));
    // The schema requires a port; out of range or missing falls back to submission's.
    assert_eq!(smtp_server("mx.example:99999"), up("mx.example", 587));
    assert_eq!(smtp_server("mx.example"), up("mx.example", 587));
}

#[test]
fn prometheus_scrapes_the_workloads_only_where_the_metrics_selector_lets_it() {
    // The metrics Service's port is the workloads' 9090; the metrics policy is what lets a
    // Prometheus in another namespace reach it, and only when the spec names that namespace.
    let mut model = model("{}");
    model.prometheus_operator = true;
    assert!(!names(&build(&model)).contains(&"lab-metrics".to_owned()));
    let mut model = crate::controller::fixtures::model(
        "{networkPolicy: {metricsNamespaceSelector: {kubernetes.io/metadata.name: monitoring}}}",
    );
    model.prometheus_operator = true;
    let all = build(&model);
    let service = crate::controller::desired::prometheus::build(&model)
        .expect("the Prometheus path")
        .metrics_service;
    let service_port = service.spec.expect("spec").ports.expect("ports")[0].port;
    let metrics = spec(named(&all, "lab-metrics"));
    assert_eq!(
        metrics["ingress"][0]["ports"][0]["port"],
        json!(service_port)
    );
    assert_eq!(
        metrics["ingress"][0]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
}
