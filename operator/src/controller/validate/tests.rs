//! Validation: small YAML specs in, the model or the typed reason out.

use std::collections::BTreeSet;

use super::*;
use crate::controller::fixtures::{model, monitor, present};

fn check(spec_yaml: &str) -> Result<ValidatedMonitor, InvalidSpec> {
    let monitor = monitor(spec_yaml);
    validate(&monitor, &present(&monitor))
}

const EXTERNAL: &str =
    "{influxdb: {external: {url: 'http://influx.example:8086/', credentialsSecret: ext}}}";

#[test]
fn empty_spec_resolves_to_the_seed_policy() {
    let m = model("{}");
    let policy = m.autoscaling.expect("autoscaling on by default");
    assert_eq!(policy.target_cpu_percent, 60);
    assert_eq!(policy.scale_up_window_seconds, 180);
    assert_eq!(policy.scale_down_window_seconds, 900);
    assert!((policy.scale_down_tolerance - 0.3).abs() < 1e-9);
    assert_eq!(m.grafana.replicas, Replicas { min: 1, max: 5 });
    assert_eq!(m.influx.url, "http://lab-influxdb.iot.svc:8086");
    assert!(m.simulator.is_some() && m.aqi.is_some());
}

#[test]
fn default_workload_images_follow_the_operator_version() {
    let m = model("{}");
    assert_eq!(
        m.coap.image,
        format!("ghcr.io/iot-operator/coap-server:{WORKLOAD_VERSION}")
    );
}

#[test]
fn component_bounds_fall_back_to_autoscaling_bounds() {
    let m = model("{grafana: {replicas: {maxReplicas: 3}}, autoscaling: {minReplicas: 2}}");
    assert_eq!(m.grafana.replicas, Replicas { min: 2, max: 3 });
    assert_eq!(m.coap.replicas, Replicas { min: 2, max: 5 });
}

#[test]
fn merged_bounds_that_cross_are_rejected_with_a_fix() {
    let err = check("{grafana: {replicas: {maxReplicas: 2}}, autoscaling: {minReplicas: 3}}")
        .expect_err("min > max");
    assert_eq!(
        err,
        InvalidSpec::ComponentBoundsCrossed {
            component: "grafana",
            min: 3,
            max: 2
        }
    );
    assert!(err.to_string().contains("set both bounds"), "{err}");
}

#[test]
fn scale_in_threshold_must_be_below_scale_out() {
    let err = check("{autoscaling: {scaleIn: {cpuPercent: 70, holdSeconds: 900}}}")
        .expect_err("crossed thresholds");
    assert_eq!(err, InvalidSpec::ScaleInNotBelowScaleOut);
}

#[test]
fn a_node_port_needs_an_exposed_service() {
    let err = check("{coap: {nodePort: 30683}}").expect_err("ClusterIP with a node port");
    assert_eq!(
        err,
        InvalidSpec::NodePortWithoutExposure { component: "coap" }
    );
}

#[test]
fn places_with_commas_are_rejected() {
    let err = check("{simulator: {places: ['a,b']}}").expect_err("comma");
    assert!(matches!(err, InvalidSpec::PlaceWithComma { place } if place == "a,b"));
}

#[test]
fn external_influx_uses_the_users_secret_for_everyone() {
    let m = model(EXTERNAL);
    assert_eq!(m.influx.mode, InfluxMode::External);
    assert_eq!(m.influx.url, "http://influx.example:8086");
    assert_eq!(m.influx.writer.secret, "ext");
    assert_eq!(m.influx.reader.password_key, "password");
}

#[test]
fn a_missing_external_credentials_secret_is_named() {
    let monitor = monitor(EXTERNAL);
    let refs = Dereferenced {
        external_credentials: Some(ReferencedSecret::Missing),
    };
    let err = validate(&monitor, &refs).expect_err("no Secret");
    assert_eq!(
        err,
        InvalidSpec::CredentialsSecretMissing {
            secret: "ext".into()
        }
    );
    assert_eq!(err.category(), "MissingCredentials");
    // Nothing read counts as nothing found.
    let unread = validate(&monitor, &Dereferenced::default()).expect_err("not read");
    assert!(matches!(
        unread,
        InvalidSpec::CredentialsSecretMissing { .. }
    ));
}

#[test]
fn a_missing_key_in_the_credentials_secret_is_named() {
    let monitor = monitor(EXTERNAL);
    let refs = Dereferenced {
        external_credentials: Some(ReferencedSecret::Keys(BTreeSet::from(["username".into()]))),
    };
    let err = validate(&monitor, &refs).expect_err("no password key");
    assert_eq!(
        err,
        InvalidSpec::CredentialsKeyMissing {
            secret: "ext".into(),
            key: "password".into()
        }
    );
}

#[test]
fn disabled_components_resolve_to_none() {
    let m = model(
        "{simulator: {enabled: false}, aqi: {enabled: false}, autoscaling: {enabled: false}}",
    );
    assert!(m.simulator.is_none() && m.aqi.is_none() && m.autoscaling.is_none());
}

#[test]
fn long_names_are_rejected() {
    let mut m = monitor("{}");
    m.metadata.name = Some("x".repeat(41));
    let err = validate(&m, &Dereferenced::default()).expect_err("41 characters");
    assert_eq!(err, InvalidSpec::NameTooLong { len: 41 });
    assert_eq!(err.category(), "InvalidSpec");
}
