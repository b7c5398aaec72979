//! The Prometheus path, where the cluster runs the Prometheus operator (its
//! `monitoring.coreos.com` CRDs exist): a headless Service over the workloads' side ports, a
//! ServiceMonitor that scrapes their `/metrics`, and a PrometheusRule with the rules on those
//! metrics (IngestFailing, AqiIngestorStale). The two monitoring kinds are not in k8s-openapi:
//! they are [`DynamicObject`]s of fixed [`ApiResource`]s, applied by `apply::monitoring`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::labels::{Component, NAME, owned_meta, stack_selector};
use crate::constants::WORKLOAD_HTTP_PORT;
use crate::controller::validate::ValidatedMonitor;

pub const GROUP: &str = "monitoring.coreos.com";
pub const VERSION: &str = "v1";

/// The ServiceMonitor kind.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "ServiceMonitor"),
        "servicemonitors",
    )
}

/// The PrometheusRule kind.
pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "PrometheusRule"),
        "prometheusrules",
    )
}

/// The workloads whose side port serves `/metrics` (InfluxDB 1.x has none; Grafana's needs a
/// login).
const SCRAPED: &str = "coap-server|aqi-ingestor|sensor-sim";

/// What the Prometheus path adds for one monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitoring {
    /// Typed: applied with the other Services.
    pub metrics_service: Service,
    pub service_monitor: DynamicObject,
    /// `None` with alerting off.
    pub rule: Option<DynamicObject>,
}

/// `None` unless the cluster has the Prometheus operator's CRDs.
pub fn build(model: &ValidatedMonitor) -> Option<Monitoring> {
    if !model.prometheus_operator {
        return None;
    }
    Some(Monitoring {
        metrics_service: metrics_service(model),
        service_monitor: service_monitor(model),
        rule: prometheus_rule(model),
    })
}

fn metrics_service(model: &ValidatedMonitor) -> Service {
    Service {
        metadata: owned_meta(model, &model.names.metrics, Component::Metrics),
        spec: Some(ServiceSpec {
            // Headless: Prometheus scrapes each pod, never a load-balanced address.
            cluster_ip: Some("None".into()),
            selector: Some(stack_selector(model)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: WORKLOAD_HTTP_PORT,
                target_port: Some(IntOrString::Int(WORKLOAD_HTTP_PORT)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn dynamic(
    model: &ValidatedMonitor,
    resource: &ApiResource,
    name: &str,
    spec: Value,
) -> DynamicObject {
    let mut object = DynamicObject::new(name, resource);
    object.metadata = owned_meta(model, name, Component::Metrics);
    object.data = json!({ "spec": spec });
    object
}

fn service_monitor(model: &ValidatedMonitor) -> DynamicObject {
    let label = format!("__meta_kubernetes_pod_label_{}", sanitize(NAME));
    let spec = json!({
        "selector": {"matchLabels": {
            NAME: Component::Metrics.as_str(),
            super::labels::INSTANCE: model.names.instance,
        }},
        "endpoints": [{
            "port": "metrics",
            "path": "/metrics",
            "interval": "30s",
            // The Service selects every pod of the stack; only the workloads serve metrics.
            "relabelings": [{"sourceLabels": [label], "regex": SCRAPED, "action": "keep"}],
        }],
    });
    dynamic(
        model,
        &service_monitor_resource(),
        &model.names.metrics,
        spec,
    )
}

/// A Kubernetes label name as Prometheus' service discovery spells it.
fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The expressions of the PrometheusRule, by alert name (public for the parser test).
pub fn rule_expressions(model: &ValidatedMonitor) -> Vec<(&'static str, String)> {
    let Some(alerts) = &model.alerts else {
        return Vec::new();
    };
    let sel = format!(
        r#"{{namespace="{}",service="{}"}}"#,
        model.namespace, model.names.metrics
    );
    let rate = |metric: &str| format!("sum(rate({metric}{sel}[5m]))");
    // A counter with labels has no series until it first counts: `or vector(0)` keeps one
    // missing kind of failure from hiding the other.
    let mut rules = vec![(
        "IngestFailing",
        format!(
            "100 * ((({}) or vector(0)) + (({}) or vector(0))) / {} > {}",
            rate("coap_requests_rejected_total"),
            rate("coap_readings_unavailable_total"),
            rate("coap_datagrams_received_total"),
            alerts.ingest_failure_percent
        ),
    )];
    if model.aqi.is_some() {
        rules.push((
            "AqiIngestorStale",
            format!(
                "time() - max(aqi_last_success_timestamp_seconds{sel}) > {}",
                alerts.aqi_stale_after.seconds
            ),
        ));
    }
    rules
}

fn prometheus_rule(model: &ValidatedMonitor) -> Option<DynamicObject> {
    let alerts = model.alerts.as_ref()?;
    let monitor = format!("{}/{}", model.namespace, model.names.instance);
    let rules: Vec<Value> = rule_expressions(model)
        .into_iter()
        .map(|(alert, expr)| {
            let (summary, description) = match alert {
                "IngestFailing" => (
                    format!(
                        "{{{{ $value | humanize }}}}% of the CoAP server's requests of {monitor} were refused or answered 5.03 over 5 minutes (threshold {} %)",
                        alerts.ingest_failure_percent
                    ),
                    "Look at coap_requests_rejected_total{reason} and coap_readings_unavailable_total{reason}: 5.03 means InfluxDB does not take writes; see docs/alerts.md#ingestfailing.",
                ),
                _ => (
                    format!(
                        "The AQI ingestor of {monitor} has not been up to date for {{{{ $value | humanizeDuration }}}}"
                    ),
                    "Check the aqi-ingestor's log and aqi_polls_total{outcome}; see docs/alerts.md#aqiingestorstale.",
                ),
            };
            json!({
                "alert": alert,
                "expr": expr,
                "for": "5m",
                "labels": {"severity": "warning", "rule": alert},
                "annotations": {"summary": summary, "description": description},
            })
        })
        .collect();
    let spec =
        json!({"groups": [{"name": format!("iot-{}", model.names.instance), "rules": rules}]});
    let name = format!("{}-alerts", model.names.instance);
    Some(dynamic(model, &prometheus_rule_resource(), &name, spec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::model;

    fn with_crds(spec: &str) -> ValidatedMonitor {
        let mut m = model(spec);
        m.prometheus_operator = true;
        m
    }

    #[test]
    fn nothing_without_the_prometheus_operators_crds() {
        assert_eq!(build(&model("{}")), None);
    }

    #[test]
    fn the_service_monitor_scrapes_the_workloads_side_ports() {
        let m = build(&with_crds("{}")).expect("built");
        let svc = m.metrics_service.spec.expect("spec");
        assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
        assert_eq!(svc.ports.expect("ports")[0].port, WORKLOAD_HTTP_PORT);
        let sm = &m.service_monitor;
        assert_eq!(
            sm.types.as_ref().map(|t| t.kind.as_str()),
            Some("ServiceMonitor")
        );
        let labels = m.metrics_service.metadata.labels.expect("labels");
        for (k, v) in sm.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("labels")
        {
            assert_eq!(labels.get(k).map(String::as_str), v.as_str(), "{k}");
        }
        let keep = &sm.data["spec"]["endpoints"][0]["relabelings"][0];
        assert_eq!(
            keep["sourceLabels"][0],
            "__meta_kubernetes_pod_label_app_kubernetes_io_name"
        );
        assert_eq!(sm.metadata.owner_references.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn the_rule_follows_the_spec() {
        let m = with_crds("alerts: {ingestFailurePercent: 10, aqiStaleAfter: 2h}");
        let exprs = rule_expressions(&m);
        assert_eq!(exprs[0].0, "IngestFailing");
        assert!(exprs[0].1.ends_with("> 10"), "{}", exprs[0].1);
        assert!(
            exprs[0]
                .1
                .contains(r#"{namespace="iot",service="lab-metrics"}"#)
        );
        assert_eq!(
            exprs[1],
            (
                "AqiIngestorStale",
                r#"time() - max(aqi_last_success_timestamp_seconds{namespace="iot",service="lab-metrics"}) > 7200"#
                    .to_owned()
            )
        );
        let built = build(&m).expect("built");
        let rule = built.rule.expect("rule");
        assert_eq!(
            rule.data["spec"]["groups"][0]["rules"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        // Without the ingestor, without its rule; without alerting, without any.
        assert_eq!(
            rule_expressions(&with_crds("aqi: {enabled: false}")).len(),
            1
        );
        assert!(
            build(&with_crds("alerts: {enabled: false}"))
                .expect("built")
                .rule
                .is_none()
        );
    }
}
