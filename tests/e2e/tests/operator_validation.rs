//! The API server rejects invalid IotMonitors (OpenAPI bounds and CEL rules from the CRD) with
//! a message that says what to fix, before the operator ever sees them.

use iot_e2e::operator_support;

use anyhow::{Result, bail};
use iot_testkit::cluster::ClusterError;
use operator_support::setup;

/// (spec, a fragment of the message the API server must answer with)
const INVALID: &[(&str, &str)] = &[
    (
        "{autoscaling: {minReplicas: 5, maxReplicas: 2}}",
        "minReplicas must be less than or equal to autoscaling.maxReplicas",
    ),
    (
        "{autoscaling: {scaleIn: {cpuPercent: 70, holdSeconds: 60}}}",
        "scaleIn.cpuPercent must be below",
    ),
    (
        "{autoscaling: {scaleOut: {cpuPercent: 101, holdSeconds: 60}}}",
        "should be less than or equal to 100",
    ),
    (
        "{autoscaling: {scaleIn: {cpuPercent: 0, holdSeconds: 60}}}",
        "should be greater than or equal to 1",
    ),
    (
        "{coap: {port: 70000}}",
        "should be less than or equal to 65535",
    ),
    (
        "{influxdb: {external: {url: 'http://i:8086', credentialsSecret: s}, backup: {schedule: '@daily'}}}",
        "influxdb.backup and influxdb.restoreFrom need the deployed InfluxDB",
    ),
    (
        "{influxdb: {backup: {schedule: 'every day'}}}",
        "influxdb.backup.schedule must be cron syntax",
    ),
    (
        "{influxdb: {backup: {schedule: '0 3 * * *', keep: 0}}}",
        "should be greater than or equal to 1",
    ),
    (
        "{influxdb: {backup: {schedule: '@daily', destination: {volume: {size: 1Gi}, s3: {endpoint: 'http://s3:9000', bucket: b, credentialsSecret: s}}}}}",
        "takes volume or s3, not both",
    ),
    (
        "{grafana: {nodePort: 30300}}",
        "nodePort needs serviceType NodePort or LoadBalancer",
    ),
    (
        "{grafana: {serviceType: NodePort, nodePort: 80}}",
        "should be greater than or equal to 30000",
    ),
    (
        "{grafana: {replicas: {minReplicas: 4, maxReplicas: 2}}}",
        "minReplicas must be less than or equal to maxReplicas",
    ),
    (
        "{influxdb: {storage: {size: lots}}}",
        "influxdb.storage.size must be a quantity",
    ),
    (
        "{influxdb: {retention: 5m}}",
        "influxdb.retention must be INF or a whole number",
    ),
    (
        "{influxdb: {databases: {dht: same, aqi: same}}}",
        "must differ",
    ),
    (
        "{influxdb: {external: {url: 'ftp://x', credentialsSecret: s}}}",
        "must start with http:// or https://",
    ),
    (
        "{aqi: {source: 'ftp://x'}}",
        "aqi.source must be 24h, 5min or an http(s) URL",
    ),
    (
        "{aqi: {pollSeconds: 1}}",
        "should be greater than or equal to 10",
    ),
    (
        "{simulator: {places: ['a,b']}}",
        "simulator.places are letters, digits",
    ),
    ("{simulator: {places: []}}", "should have at least 1 items"),
    (
        "{alerts: {silentAfter: 10min}}",
        "alerts.silentAfter must be a whole number of seconds, minutes or hours",
    ),
    (
        "{alerts: {aqiBand: 11}}",
        "should be less than or equal to 10",
    ),
    (
        "{alerts: {temperature: {min: 50, max: 10}}}",
        "alerts.temperature.min must be below alerts.temperature.max",
    ),
    (
        "{alerts: {contactPoints: [{name: ops, email: {addresses: [ops@example.org]}}]}}",
        "an email contact point needs alerts.smtp",
    ),
    (
        "{alerts: {contactPoints: [{name: ops}]}}",
        "a contact point needs exactly one of email, webhook or slack",
    ),
    (
        "{alerts: {contactPoints: [{name: a, email: {addresses: [x@y.z]}}, {name: a, email: {addresses: [x@y.z]}}]}}",
        "alerts.contactPoints names must be unique",
    ),
    (
        "{coap: {devices: [{name: Door, place: hall}]}}",
        "should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    ),
    (
        "{coap: {devices: [{name: door, place: 'the hall'}]}}",
        "should match '^[A-Za-z0-9._-]+$'",
    ),
    // Server-side apply refuses a map list with a key twice before validation does (a create
    // or an update would answer "Duplicate value").
    (
        "{coap: {devices: [{name: door, place: a}, {name: door, place: b}]}}",
        "duplicate entries for key [name=\"door\"]",
    ),
    (
        "{coap: {serviceType: NodePort, nodePort: 30683}}",
        "coap.nodePort is the node port of plaintext CoAP, which is off",
    ),
    (
        "{coap: {plaintext: true, port: 5684}}",
        "coap.port 5684 is the port of coaps://",
    ),
    (
        "{coap: {dtlsNodePort: 30684}}",
        "coap.dtlsNodePort needs serviceType NodePort or LoadBalancer",
    ),
    (
        "{simulator: {sensors: 0}}",
        "should be greater than or equal to 1",
    ),
    (
        "{grafana: {resources: {cpuRequest: fast, memoryRequest: 1Mi, memoryLimit: 2Mi}}}",
        "cpuRequest must be a quantity",
    ),
    ("{grafana: {serviceType: Everywhere}}", "Unsupported value"),
    // A label selector the API server would refuse in a NetworkPolicy is refused here already.
    (
        "{networkPolicy: {metricsNamespaceSelector: {'bad key!': x}}}",
        "label keys must be a name of at most 63",
    ),
    (
        "{networkPolicy: {metricsNamespaceSelector: {team: 'not a value'}}}",
        "should match",
    ),
    (
        "{networkPolicy: {metricsNamespaceSelector: {'-team.example/x': ops}}}",
        "label keys must be a name of at most 63",
    ),
    (
        "{networkPolicy: {metricsNamespaceSelector: {}}}",
        "should have at least 1 properties",
    ),
    (
        "{coap: {allowedSources: [{podSelector: {'a/b/c': x}}]}}",
        "label keys must be a name of at most 63",
    ),
    (
        "{coap: {allowedSources: [{cidr: 10.0.0.0/33}]}}",
        "coap.allowedSources[].cidr must be an address range",
    ),
    (
        "{coap: {allowedSources: [{cidr: 10.0.0.0/8, podSelector: {a: b}}]}}",
        "either a cidr or selectors",
    ),
    (
        "{coap: {allowedSources: [{}]}}",
        "either a cidr or selectors",
    ),
    ("{unknownField: 1}", "unknownField"),
];

#[tokio::test]
async fn invalid_monitors_are_rejected_with_a_message_that_says_what_to_fix() -> Result<()> {
    let (cluster, ns) = setup("operator-validation").await?;
    let mut failures = Vec::new();
    for (i, (spec, expected)) in INVALID.iter().enumerate() {
        let yaml = format!(
            "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: bad-{i}}}\nspec: {spec}\n"
        );
        match cluster.apply_yaml(Some(ns.name()), &yaml).await {
            Ok(_) => failures.push(format!("{spec}: accepted")),
            Err(ClusterError::Kube(kube::Error::Api(status)))
                if status.message.contains(expected) => {}
            Err(other) => failures.push(format!("{spec}: expected {expected:?}, got {other}")),
        }
    }
    let long = format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: {}}}\nspec: {{}}\n",
        "x".repeat(41)
    );
    match cluster.apply_yaml(Some(ns.name()), &long).await {
        Err(ClusterError::Kube(kube::Error::Api(status)))
            if status.message.contains("at most 40 characters") => {}
        other => failures.push(format!("41-character name: {other:?}")),
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} invalid specs were not rejected as expected:\n{}",
            failures.len(),
            INVALID.len() + 1,
            failures.join("\n")
        );
    }
    // And the smallest valid one is accepted, with every default filled in by the API server.
    let applied = cluster
        .apply_yaml(Some(ns.name()), "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {name: ok}\nspec: {}\n")
        .await?;
    let spec = &applied[0].data["spec"];
    anyhow::ensure!(spec["autoscaling"]["scaleIn"]["cpuPercent"] == 42, "{spec}");
    anyhow::ensure!(spec["aqi"]["source"] == "24h", "{spec}");
    anyhow::ensure!(spec["networkPolicy"]["enabled"] == true, "{spec}");
    // Valid selectors and ranges pass.
    cluster
        .apply_yaml(
            Some(ns.name()),
            "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {name: fenced}\n\
             spec: {networkPolicy: {metricsNamespaceSelector: {kubernetes.io/metadata.name: monitoring, \
             team: ''}}, coap: {allowedSources: [{cidr: 192.0.2.0/24}, {cidr: '2001:db8::/32'}, \
             {namespaceSelector: {site: lab}, podSelector: {app.example.com/role: sensor}}]}}\n",
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_partly_written_nested_field_keeps_the_defaults_of_the_rest() -> Result<()> {
    let (cluster, ns) = setup("operator-partial").await?;
    let applied = cluster
        .apply_yaml(
            Some(ns.name()),
            "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {name: partial}\n\
             spec: {autoscaling: {scaleIn: {cpuPercent: 30}}, coap: {resources: {cpuRequest: 200m}}}\n",
        )
        .await?;
    let spec = &applied[0].data["spec"];
    let scale_in = &spec["autoscaling"]["scaleIn"];
    anyhow::ensure!(
        scale_in["cpuPercent"] == 30 && scale_in["holdSeconds"] == 900,
        "{spec}"
    );
    anyhow::ensure!(
        spec["autoscaling"]["scaleOut"]["holdSeconds"] == 180,
        "{spec}"
    );
    let coap = &spec["coap"]["resources"];
    anyhow::ensure!(
        coap["cpuRequest"] == "200m"
            && coap["memoryRequest"] == "32Mi"
            && coap["memoryLimit"] == "128Mi",
        "{spec}"
    );
    Ok(())
}
