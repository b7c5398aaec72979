//! Builder tests: small YAML specs in, assertions on the objects out.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::Value;

use super::*;
use crate::controller::fixtures::model;

fn desired(spec: &str) -> DesiredObjects {
    build(&model(spec))
}

fn pod_specs(objects: &DesiredObjects) -> Vec<(String, PodSpec)> {
    let deployments = objects.deployments.iter().map(|d| {
        let spec = d.spec.template.spec.clone();
        (d.metadata.name.clone(), spec)
    });
    let stateful_sets = objects.stateful_sets.iter().map(|s| {
        let spec = s.spec.template.spec.clone();
        (s.metadata.name.clone(), spec)
    });
    deployments
        .chain(stateful_sets)
        .map(|(name, spec)| {
            (
                name.expect("named"),
                spec.expect("every workload has a pod spec"),
            )
        })
        .collect()
}

fn names<T: kube::Resource>(objects: &[T]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

fn env_value(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

fn container<'a>(objects: &'a DesiredObjects, deployment: &str) -> &'a Container {
    let d = objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(deployment))
        .expect("deployment exists");
    &d.spec.template.spec.as_ref().expect("pod").containers[0]
}

#[test]
fn empty_spec_builds_the_whole_stack() {
    let objects = desired("{}");
    assert_eq!(
        names(&objects.deployments),
        [
            "lab-grafana",
            "lab-coap-server",
            "lab-sensor-sim",
            "lab-aqi-ingestor"
        ]
    );
    assert_eq!(names(&objects.stateful_sets), ["lab-influxdb"]);
    assert_eq!(
        names(&objects.autoscalers),
        ["lab-grafana", "lab-coap-server"]
    );
    assert_eq!(
        names(&objects.persistent_volume_claims),
        ["lab-influxdb-data"]
    );
    assert_eq!(
        names(&objects.network_policies),
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
        names(&objects.services),
        [
            "lab-influxdb",
            "lab-influxdb-hl",
            "lab-grafana",
            "lab-coap-server"
        ]
    );
}

#[test]
fn every_pod_passes_the_restricted_pod_security_standard() {
    let objects = desired("{}");
    for (name, pod) in pod_specs(&objects) {
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true), "{name}");
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{name}"
        );
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let sc = c
                .security_context
                .as_ref()
                .expect("container security context");
            assert_eq!(
                sc.allow_privilege_escalation,
                Some(false),
                "{name}/{}",
                c.name
            );
            let caps = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(caps, Some(vec!["ALL".to_owned()]), "{name}/{}", c.name);
            assert!(sc.privileged.is_none(), "{name}/{}", c.name);
        }
        let volumes = pod.volumes.iter().flatten();
        assert!(volumes.clone().all(|v| v.host_path.is_none()), "{name}");
    }
}

#[test]
fn every_container_has_requests_and_probes() {
    let objects = desired("{}");
    for (name, pod) in pod_specs(&objects) {
        for c in &pod.containers {
            let requests = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .expect("requests");
            assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
            assert!(c.readiness_probe.is_some(), "{name}/{} readiness", c.name);
            if c.name != "setup" {
                assert!(c.liveness_probe.is_some(), "{name}/{} liveness", c.name);
            }
        }
    }
}

#[test]
fn autoscaled_deployments_leave_replicas_to_the_hpa() {
    let objects = desired("{}");
    for name in ["lab-grafana", "lab-coap-server"] {
        let d = objects
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .expect("deployment");
        assert_eq!(d.spec.replicas, None, "{name}");
    }
    let fixed = desired("{autoscaling: {enabled: false, minReplicas: 2}}");
    assert!(fixed.autoscalers.is_empty());
    let grafana = &fixed.deployments[0];
    assert_eq!(grafana.spec.replicas, Some(2));
}

#[test]
fn hpa_behavior_mirrors_the_seed_autoscaling_group() {
    let objects = desired("{}");
    let hpa = serde_json::to_value(&objects.autoscalers[1]).expect("json");
    let spec = &hpa["spec"];
    assert_eq!(spec["minReplicas"], 1);
    assert_eq!(spec["maxReplicas"], 5);
    assert_eq!(spec["scaleTargetRef"]["name"], "lab-coap-server");
    assert_eq!(
        spec["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    let up = &spec["behavior"]["scaleUp"];
    let down = &spec["behavior"]["scaleDown"];
    assert_eq!(up["stabilizationWindowSeconds"], 180);
    assert_eq!(down["stabilizationWindowSeconds"], 900);
    assert_eq!(up["tolerance"], "0");
    assert_eq!(down["tolerance"], "300m");
    for rules in [up, down] {
        assert_eq!(
            rules["policies"],
            serde_json::json!([{"type": "Pods", "value": 1, "periodSeconds": 150}])
        );
    }
}

#[test]
fn no_configmap_contains_a_secret() {
    let objects = desired("{}");
    let provisioning = objects
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("lab-grafana-datasources"))
        .expect("provisioning");
    let datasources = &provisioning.data.as_ref().expect("data")["datasources.yaml"];
    assert!(
        datasources.contains("password: $INFLUX_READ_PASSWORD"),
        "{datasources}"
    );
    let grafana = container(&objects, "lab-grafana");
    let from_secret = grafana
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "INFLUX_READ_PASSWORD")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("reader password from the Secret");
    assert_eq!(from_secret.name, "lab-credentials");
    assert_eq!(from_secret.key, "influxdb-reader-password");
    // No literal password anywhere in any ConfigMap: every value that looks like a password
    // is a `$VAR` reference.
    for cm in &objects.config_maps {
        for value in cm.data.iter().flat_map(|d| d.values()) {
            for line in value.lines().filter(|l| l.contains("password:")) {
                assert!(line.contains("$INFLUX_"), "{line}");
            }
        }
    }
}

#[test]
fn grafana_admits_anonymous_viewers_only_when_the_spec_asks() {
    let closed = desired("{}");
    let grafana = container(&closed, "lab-grafana");
    assert_eq!(
        env_value(grafana, "GF_AUTH_ANONYMOUS_ENABLED").as_deref(),
        Some("false")
    );
    let open = desired("{grafana: {anonymousViewer: true}}");
    let grafana = container(&open, "lab-grafana");
    assert_eq!(
        env_value(grafana, "GF_AUTH_ANONYMOUS_ENABLED").as_deref(),
        Some("true")
    );
    assert_eq!(
        env_value(grafana, "GF_AUTH_ANONYMOUS_ORG_ROLE").as_deref(),
        Some("Viewer"),
        "anonymous visitors may only view"
    );
}

#[test]
fn workloads_get_the_contract_env() {
    let objects = desired("{coap: {batch: {size: 50}}, simulator: {places: [a, b]}}");
    let coap = container(&objects, "lab-coap-server");
    assert_eq!(
        env_value(coap, "INFLUX_URL").as_deref(),
        Some("http://lab-influxdb.iot.svc:8086")
    );
    assert_eq!(env_value(coap, "INFLUX_DB").as_deref(), Some("dht"));
    assert_eq!(env_value(coap, "BATCH_SIZE").as_deref(), Some("50"));
    assert_eq!(env_value(coap, "CREATE_DATABASE").as_deref(), Some("false"));
    assert_eq!(
        env_value(coap, "HTTP_ADDR").as_deref(),
        Some("0.0.0.0:9090")
    );
    let sim = container(&objects, "lab-sensor-sim");
    assert_eq!(
        env_value(sim, "COAP_SERVER").as_deref(),
        Some("lab-coap-server:5684")
    );
    assert_eq!(env_value(sim, "SIM_PLACES").as_deref(), Some("a,b"));
    assert!(env_value(sim, "INFLUX_URL").is_none());
    let aqi = container(&objects, "lab-aqi-ingestor");
    assert_eq!(env_value(aqi, "INFLUX_DB").as_deref(), Some("aqi"));
    assert_eq!(env_value(aqi, "AQI_SOURCE").as_deref(), Some("24h"));
    assert_eq!(
        env_value(aqi, "CREATE_DATABASE").as_deref(),
        Some("false"),
        "the writer may not create databases"
    );
}

#[test]
fn aqi_ingestor_is_a_single_recreated_replica() {
    let objects = desired("{}");
    let d = objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("lab-aqi-ingestor"))
        .expect("aqi");
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate")
    );
}

#[test]
fn disabled_components_are_not_built() {
    let objects = desired("{simulator: {enabled: false}, aqi: {enabled: false}}");
    assert_eq!(
        names(&objects.deployments),
        ["lab-grafana", "lab-coap-server"]
    );
}

#[test]
fn external_influx_deploys_no_database() {
    let objects =
        desired("{influxdb: {external: {url: 'http://ext:8086', credentialsSecret: ext}}}");
    assert!(objects.stateful_sets.is_empty());
    assert!(objects.persistent_volume_claims.is_empty());
    assert!(
        !names(&objects.network_policies).contains(&"lab-influxdb".to_owned()),
        "no InfluxDB pods to fence"
    );
    let coap = container(&objects, "lab-coap-server");
    assert_eq!(env_value(coap, "CREATE_DATABASE").as_deref(), Some("true"));
    assert!(
        !objects
            .credentials
            .generated
            .iter()
            .any(|k| k.starts_with("influxdb"))
    );
}

#[test]
fn data_volume_is_kept_unless_the_spec_says_otherwise() {
    let kept = desired("{}");
    assert!(
        kept.persistent_volume_claims[0]
            .metadata
            .owner_references
            .is_none()
    );
    let dropped = desired("{influxdb: {storage: {deleteWithMonitor: true, size: 5Gi}}}");
    let pvc = &dropped.persistent_volume_claims[0];
    assert!(pvc.metadata.owner_references.is_some());
    let size = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .map(|r| r["storage"].0.clone());
    assert_eq!(size.as_deref(), Some("5Gi"));
}

#[test]
fn every_owned_child_points_at_the_monitor() {
    let objects = desired("{}");
    let value = serde_json::to_value((
        &objects.config_maps,
        &objects.services,
        &objects.deployments,
        &objects.stateful_sets,
        &objects.autoscalers,
        &objects.network_policies,
    ))
    .expect("json");
    let Value::Array(groups) = value else {
        panic!("tuple is an array")
    };
    for object in groups
        .iter()
        .flat_map(|g| g.as_array().into_iter().flatten())
    {
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            owner["kind"], "IotMonitor",
            "{}",
            object["metadata"]["name"]
        );
        assert_eq!(owner["controller"], true);
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "iot-operator"
        );
    }
}

#[test]
fn grafana_pods_roll_when_provisioning_changes() {
    let hash = |spec: &str| {
        desired(spec).deployments[0]
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .map(|a| a[labels::CONFIG_HASH].clone())
    };
    assert_eq!(hash("{}"), hash("{}"));
    assert_ne!(hash("{}"), hash("{influxdb: {databases: {dht: other}}}"));
}

#[test]
fn influxdb_runs_with_auth_and_a_setup_sidecar() {
    let objects = desired("{influxdb: {retention: 12w}}");
    let sts = &objects.stateful_sets[0];
    let pod = sts.spec.template.spec.as_ref().expect("pod");
    let influxd = &pod.containers[0];
    assert_eq!(
        env_value(influxd, "INFLUXDB_HTTP_AUTH_ENABLED").as_deref(),
        Some("true")
    );
    let setup = &pod.containers[1];
    assert_eq!(
        env_value(setup, "SETUP_PLAN").as_deref(),
        Some("/setup/plan")
    );
    let plan = setup_plan(&objects);
    assert!(plan.contains("database\tdht\t12w\n"), "{plan}");
    assert!(plan.contains("database\taqi\t12w\n"), "{plan}");
}

fn setup_plan(objects: &DesiredObjects) -> String {
    let setup = objects
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("lab-influxdb-setup"))
        .expect("setup ConfigMap");
    setup.data.as_ref().expect("data")["plan"].clone()
}

#[test]
fn tiers_and_per_database_retention_change_the_plan_but_not_the_pod() {
    let plain = desired("{}");
    let tiered = desired(
        "{influxdb: {databaseRetention: {aqi: INF}, downsampling: [{every: 1h, keep: 104w}, {every: 5m, keep: 12w}]}}",
    );
    let plan = setup_plan(&tiered);
    assert!(plan.contains("database\tdht\t30d\n"), "{plan}");
    assert!(plan.contains("database\taqi\tINF\n"), "{plan}");
    for db in ["dht", "aqi"] {
        assert!(
            plan.contains(&format!("policy\t{db}\tds_5m\t12w\n")),
            "{plan}"
        );
        assert!(
            plan.contains(&format!("policy\t{db}\tds_1h\t104w\n")),
            "{plan}"
        );
        assert!(
            plan.contains(&format!("INTO \"{db}\".\"ds_1h\".:MEASUREMENT")),
            "{plan}"
        );
    }
    // The sidecar re-reads the plan: a change must not restart InfluxDB.
    assert_eq!(
        plain.stateful_sets[0].spec.template,
        tiered.stateful_sets[0].spec.template
    );
    assert_ne!(setup_plan(&plain), plan);
}

#[test]
fn influxdb_limits_its_series_and_tag_values_explicitly() {
    let limits = |spec: &str| {
        let objects = desired(spec);
        let pod = objects.stateful_sets[0]
            .spec
            .template
            .spec
            .clone()
            .expect("pod");
        let influxd = &pod.containers[0];
        (
            env_value(influxd, "INFLUXDB_DATA_MAX_SERIES_PER_DATABASE"),
            env_value(influxd, "INFLUXDB_DATA_MAX_VALUES_PER_TAG"),
            influxd.termination_message_policy.clone(),
        )
    };
    let (series, values, policy) = limits("{}");
    assert_eq!(series.as_deref(), Some("200000"));
    assert_eq!(values.as_deref(), Some("100000"));
    // The kubelet keeps the log's tail, which the status reports when InfluxDB cannot start.
    assert_eq!(policy.as_deref(), Some("FallbackToLogsOnError"));
    let (series, values, _) =
        limits("{influxdb: {limits: {maxSeriesPerDatabase: 5000, maxValuesPerTag: 0}}}");
    assert_eq!(series.as_deref(), Some("5000"));
    assert_eq!(values.as_deref(), Some("0"));
}

#[test]
fn coap_server_refuses_points_older_than_the_retention_and_drains_within_its_grace() {
    let objects = desired("{influxdb: {retention: 12w}}");
    let coap = container(&objects, "lab-coap-server");
    assert_eq!(env_value(coap, "INFLUX_RETENTION").as_deref(), Some("12w"));
    let drain: i64 = env_value(coap, "DRAIN_SECONDS")
        .and_then(|d| d.parse().ok())
        .expect("DRAIN_SECONDS");
    let pods = pod_specs(&objects);
    let (_, pod) = pods
        .iter()
        .find(|(name, _)| name == "lab-coap-server")
        .expect("coap-server pods");
    let grace = pod.termination_grace_period_seconds.expect("grace period");
    assert!(
        grace > drain,
        "grace {grace} s must exceed the drain {drain} s"
    );
    // An external InfluxDB's retention is not known: no check.
    let external =
        desired("{influxdb: {external: {url: 'http://influx:8086', credentialsSecret: creds}}}");
    assert_eq!(
        env_value(container(&external, "lab-coap-server"), "INFLUX_RETENTION"),
        None
    );
}

#[test]
fn an_exposed_coap_service_keeps_the_senders_address() {
    let policy = |spec: &str| {
        let objects = desired(spec);
        let svc = serde_json::to_value(&objects.services).expect("json");
        svc.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["metadata"]["name"] == "lab-coap-server")
            })
            .map(|s| s["spec"]["externalTrafficPolicy"].clone())
            .unwrap_or_default()
    };
    assert!(
        policy("{}").is_null(),
        "a ClusterIP Service has no external traffic"
    );
    assert_eq!(policy("{coap: {serviceType: NodePort}}"), "Local");
    assert_eq!(policy("{coap: {serviceType: LoadBalancer}}"), "Local");
    let grafana = desired("{grafana: {serviceType: NodePort}}");
    let svc = serde_json::to_value(&grafana.services).expect("json");
    assert!(
        svc.as_array()
            .into_iter()
            .flatten()
            .all(|s| s["metadata"]["name"] != "lab-grafana"
                || s["spec"]["externalTrafficPolicy"].is_null())
    );
}

#[test]
fn node_ports_are_set_on_exposed_services() {
    let objects = desired(
        "{grafana: {serviceType: NodePort, nodePort: 30300}, coap: {serviceType: NodePort, plaintext: true, nodePort: 30683, dtlsNodePort: 30684}}",
    );
    let svc = serde_json::to_value(&objects.services).expect("json");
    assert_eq!(svc[2]["spec"]["type"], "NodePort");
    assert_eq!(svc[2]["spec"]["ports"][0]["nodePort"], 30300);
    let coap = &svc[3]["spec"]["ports"];
    assert_eq!(coap[0]["name"], "coaps");
    assert_eq!(coap[0]["protocol"], "UDP");
    assert_eq!(coap[0]["nodePort"], 30684);
    assert_eq!(coap[1]["name"], "coap");
    assert_eq!(coap[1]["nodePort"], 30683);
}

#[test]
fn grafana_sessions_stick_to_one_replica_and_coap_is_spread() {
    let objects = desired("{}");
    let svc = serde_json::to_value(&objects.services).expect("json");
    let by_name = |name: &str| {
        svc.as_array()
            .and_then(|a| a.iter().find(|s| s["metadata"]["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        by_name("lab-grafana")["spec"]["sessionAffinity"],
        "ClientIP"
    );
    assert!(by_name("lab-coap-server")["spec"]["sessionAffinity"].is_null());
}

mod backup;
mod dashboards;
mod devices;
mod scheduling;

#[test]
fn every_pod_template_shares_the_skeleton() {
    let objects = desired("{}");
    let templates = objects
        .deployments
        .iter()
        .map(|d| (&d.metadata.name, &d.spec.selector, &d.spec.template))
        .chain(
            objects
                .stateful_sets
                .iter()
                .map(|s| (&s.metadata.name, &s.spec.selector, &s.spec.template)),
        );
    for (name, selector, template) in templates {
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        for (k, v) in selector.match_labels.iter().flatten() {
            assert_eq!(
                labels.get(k),
                Some(v),
                "{name:?}: the selector selects the pods"
            );
        }
        assert_eq!(labels["app.kubernetes.io/managed-by"], "iot-operator");
        let pod = template.spec.as_ref().expect("pod spec");
        // Only coap-server talks to the API server (it follows the device registry).
        let talks_to_the_api = name.as_deref() == Some("lab-coap-server");
        assert_eq!(
            pod.automount_service_account_token,
            Some(talks_to_the_api),
            "{name:?}"
        );
        assert_eq!(
            pod.service_account_name.is_some(),
            talks_to_the_api,
            "{name:?}"
        );
        assert!(pod.security_context.is_some(), "{name:?}");
    }
}

#[test]
fn every_writer_gets_the_same_influx_env_but_its_database() {
    let objects = desired("{}");
    let writer_env = |deployment: &str| {
        container(&objects, deployment)
            .env
            .iter()
            .flatten()
            .filter(|e| e.name.starts_with("INFLUX_") || e.name == "CREATE_DATABASE")
            // coap-server's own check of `ts=`, not part of the writer's contract.
            .filter(|e| e.name != "INFLUX_RETENTION")
            .cloned()
            .collect::<Vec<_>>()
    };
    let coap = writer_env("lab-coap-server");
    let aqi = writer_env("lab-aqi-ingestor");
    let names = |env: &[k8s_openapi::api::core::v1::EnvVar]| {
        env.iter().map(|e| e.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        names(&coap),
        [
            "INFLUX_URL",
            "INFLUX_DB",
            "CREATE_DATABASE",
            "INFLUX_USERNAME",
            "INFLUX_PASSWORD"
        ]
    );
    let differing: Vec<_> = coap
        .iter()
        .zip(&aqi)
        .filter(|(c, a)| c != a)
        .map(|(c, _)| c.name.as_str())
        .collect();
    assert_eq!(differing, ["INFLUX_DB"]);
}
