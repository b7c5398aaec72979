//! Validation: small YAML specs in, the model or the typed reason out.

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
        InvalidSpec::NodePortWithoutExposure {
            field: "coap.nodePort"
        }
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

fn opted_in(keys: &[&str], url: Option<&str>) -> Dereferenced {
    Dereferenced {
        external_credentials: Some(ReferencedSecret::OptedIn {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            url: url.map(str::to_owned),
        }),
    }
}

#[test]
fn a_missing_key_in_the_credentials_secret_is_named() {
    let monitor = monitor(EXTERNAL);
    let err = validate(&monitor, &opted_in(&["username"], None)).expect_err("no password key");
    assert_eq!(
        err,
        InvalidSpec::CredentialsKeyMissing {
            secret: "ext".into(),
            namespace: "iot".into(),
            keys: vec!["password".into()],
        }
    );
    assert_eq!(err.category(), "MissingCredentials");
    // Both missing: both named, so one fix is enough.
    let err = validate(&monitor, &opted_in(&["user"], None)).expect_err("no keys");
    let message = err.to_string();
    assert!(
        message.contains("no key \"username\" and no key \"password\"")
            && message.contains("kubectl edit secret ext -n iot")
            && message.contains("spec.influxdb.external.usernameKey"),
        "{message}"
    );
}

#[test]
fn a_secret_that_does_not_opt_in_is_refused_with_the_command_that_opts_in() {
    let monitor = monitor(EXTERNAL);
    let refs = Dereferenced {
        external_credentials: Some(ReferencedSecret::NotOptedIn),
    };
    let err = validate(&monitor, &refs).expect_err("not opted in");
    assert_eq!(
        err,
        InvalidSpec::CredentialsSecretNotOptedIn {
            secret: "ext".into(),
            namespace: "iot".into()
        }
    );
    assert_eq!(err.category(), "CredentialsNotAllowed");
    let message = err.to_string();
    assert!(
        message.contains(
            "kubectl label secret ext -n iot iot.operator.dev/allow-external-influxdb=true"
        ),
        "{message}"
    );
}

#[test]
fn a_secret_that_names_its_url_is_used_only_with_that_url() {
    let monitor = monitor(EXTERNAL);
    // The spec's trailing slash and the annotation's are both ignored.
    let same = opted_in(
        &["username", "password"],
        Some("http://influx.example:8086/"),
    );
    assert_eq!(
        validate(&monitor, &same)
            .expect("same URL")
            .influx
            .writer
            .secret,
        "ext"
    );
    let other = opted_in(
        &["username", "password"],
        Some("https://influx.example:8086"),
    );
    let err = validate(&monitor, &other).expect_err("another URL");
    assert_eq!(
        err,
        InvalidSpec::CredentialsUrlNotAllowed {
            secret: "ext".into(),
            allowed: "https://influx.example:8086".into(),
            url: "http://influx.example:8086".into(),
        }
    );
    assert_eq!(err.category(), "CredentialsNotAllowed");
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

#[test]
fn an_empty_spec_runs_the_simulator_over_dtls_only() {
    let m = model("{}");
    assert!(!m.coap.plaintext);
    assert!(m.coap.devices.is_empty());
    let names: Vec<_> = m
        .devices()
        .map(|d| (d.name.as_str(), d.place.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("sim-1", "room1"),
            ("sim-2", "room1"),
            ("sim-3", "room1"),
            ("sim-4", "room1")
        ]
    );
}

#[test]
fn simulated_sensors_are_spread_over_the_places_as_sensor_sim_does() {
    let m = model("{simulator: {sensors: 3, places: [a, b]}}");
    let places: Vec<_> = m.devices().map(|d| d.place.as_str()).collect();
    assert_eq!(places, ["a", "b", "a"]);
}

#[test]
fn a_device_may_not_take_a_simulated_sensors_name() {
    let err = check("{coap: {devices: [{name: sim-2, place: hall}]}}").expect_err("sim-2");
    assert_eq!(
        err,
        InvalidSpec::DeviceNameOfSimulator {
            name: "sim-2".into(),
            sensors: 4
        }
    );
    assert!(err.to_string().contains("rename the device"), "{err}");
    // Beyond the sensors, not the simulator's; without the simulator, no one's.
    for free in [
        "{coap: {devices: [{name: sim-5, place: hall}]}}",
        "{coap: {devices: [{name: sim-01, place: hall}]}}",
        "{coap: {devices: [{name: sim-2, place: hall}]}, simulator: {enabled: false}}",
    ] {
        assert!(check(free).is_ok(), "{free}");
    }
}

#[test]
fn device_names_are_unique_dns_labels_and_places_are_tags() {
    let dup = check("{coap: {devices: [{name: a, place: x}, {name: a, place: y}]}}");
    assert_eq!(dup, Err(InvalidSpec::DuplicateDevice { name: "a".into() }));
    for bad in ["Door", "-door", "door-", "do_or", "", &"d".repeat(64)] {
        let spec = format!("{{coap: {{devices: [{{name: '{bad}', place: x}}]}}}}");
        assert_eq!(
            check(&spec),
            Err(InvalidSpec::BadDeviceName { name: bad.into() }),
            "{bad:?}"
        );
    }
    assert!(
        check(&format!(
            "{{coap: {{devices: [{{name: '{}', place: x}}]}}}}",
            "d".repeat(63)
        ))
        .is_ok()
    );
    let place = check("{coap: {devices: [{name: door, place: 'the hall'}]}}");
    assert_eq!(
        place,
        Err(InvalidSpec::BadDevicePlace {
            name: "door".into(),
            place: "the hall".into()
        })
    );
}

#[test]
fn plain_coaps_node_port_and_port_need_plaintext_on() {
    assert_eq!(
        check("{coap: {serviceType: NodePort, nodePort: 30683}}"),
        Err(InvalidSpec::NodePortWithoutPlaintext)
    );
    assert!(check("{coap: {serviceType: NodePort, plaintext: true, nodePort: 30683}}").is_ok());
    assert_eq!(
        check("{coap: {plaintext: true, port: 5684}}"),
        Err(InvalidSpec::PlaintextOnCoapsPort { port: 5684 })
    );
    // Closed, the plain port is not used: any number will do.
    assert!(check("{coap: {port: 5684}}").is_ok());
    assert_eq!(
        check(
            "{coap: {serviceType: NodePort, plaintext: true, nodePort: 30683, dtlsNodePort: 30683}}"
        ),
        Err(InvalidSpec::SameNodePorts { port: 30683 })
    );
    assert_eq!(
        check("{coap: {dtlsNodePort: 30684}}"),
        Err(InvalidSpec::NodePortWithoutExposure {
            field: "coap.dtlsNodePort"
        })
    );
}

#[test]
fn a_registry_larger_than_a_configmap_is_refused() {
    // 10,000 sensors at a 63-character place: about 720 kB; 3,000 devices with the longest
    // names and places add about 380 kB.
    let place = "p".repeat(63);
    let devices: Vec<String> = (0..3000)
        .map(|i| format!("{{name: {:0>63}, place: {}}}", i, "q".repeat(64)))
        .collect();
    let spec = format!(
        "{{coap: {{devices: [{}]}}, simulator: {{sensors: 10000, places: [{place}]}}}}",
        devices.join(", ")
    );
    let err = check(&spec).expect_err("too large");
    assert!(
        matches!(err, InvalidSpec::RegistryTooLarge { devices: 13000, .. }),
        "{err}"
    );
    let fewer = spec.replace("sensors: 10000", "sensors: 100");
    assert!(check(&fewer).is_ok());
}
