//! Spec → resolved model (pure). Defaults are already filled by serde and the API server;
//! this step resolves what depends on several fields (replica bounds, image tags, URLs, names)
//! and rejects what CEL cannot see, with a message that says what to fix.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::{
    AqiSpec, BatchSpec, IotMonitor, RegionSpec, ReplicaBounds, ResourcesSpec, ServiceType,
    SimulatorSpec,
};

/// Version of the workload images deployed by default: the operator and the workloads are
/// released together.
pub const WORKLOAD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the default workload images live.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/iot-operator";

/// Longest `metadata.name` accepted: child names append up to 13 characters (`-aqi-ingestor`)
/// and the StatefulSet's pod name adds a controller-revision label that must stay below 63.
pub const MAX_NAME_LEN: usize = 40;

/// Port every workload serves `/metrics`, `/healthz` and `/readyz` on.
pub const WORKLOAD_HTTP_PORT: i32 = 9090;
/// Port of the InfluxDB HTTP API.
pub const INFLUX_PORT: i32 = 8086;
/// Port of Grafana's HTTP server.
pub const GRAFANA_PORT: i32 = 3000;
/// UDP port the CoAP server binds in its container (the Service port is configurable).
pub const COAP_CONTAINER_PORT: i32 = 5683;

/// A spec the operator cannot turn into objects; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// Names of every child, derived from the IotMonitor's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub instance: String,
    pub credentials: String,
    pub influxdb: String,
    pub influxdb_headless: String,
    pub influxdb_data: String,
    pub influxdb_setup: String,
    pub grafana: String,
    pub grafana_datasources: String,
    pub grafana_dashboards: String,
    pub coap_server: String,
    pub simulator: String,
    pub aqi_ingestor: String,
}

impl Names {
    fn new(instance: &str) -> Self {
        let n = |suffix: &str| format!("{instance}-{suffix}");
        Self {
            instance: instance.to_owned(),
            credentials: n("credentials"),
            influxdb: n("influxdb"),
            influxdb_headless: n("influxdb-hl"),
            influxdb_data: n("influxdb-data"),
            influxdb_setup: n("influxdb-setup"),
            grafana: n("grafana"),
            grafana_datasources: n("grafana-datasources"),
            grafana_dashboards: n("grafana-dashboards"),
            coap_server: n("coap-server"),
            simulator: n("sensor-sim"),
            aqi_ingestor: n("aqi-ingestor"),
        }
    }
}

/// Replica bounds after merging a component's own bounds with `spec.autoscaling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub min: i32,
    pub max: i32,
}

/// The autoscaler policy, in the units the HPA uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalePolicy {
    pub target_cpu_percent: i32,
    pub scale_up_window_seconds: i32,
    pub scale_down_window_seconds: i32,
    /// `1 - scaleIn/scaleOut`: below this fraction under target the HPA scales in.
    pub scale_down_tolerance: f64,
    pub cooldown_seconds: i32,
}

/// How workloads authenticate to InfluxDB: a key in a Secret for the user and the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretCredentials {
    pub secret: String,
    pub username_key: String,
    pub password_key: String,
}

/// InfluxDB as deployed by the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct InternalInflux {
    pub image: String,
    pub resources: ResourcesSpec,
    pub storage_size: String,
    pub storage_class_name: Option<String>,
    pub delete_with_monitor: bool,
    pub retention: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InfluxMode {
    Internal(InternalInflux),
    External,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Influx {
    pub mode: InfluxMode,
    /// Base URL the workloads and Grafana use.
    pub url: String,
    pub dht_db: String,
    pub aqi_db: String,
    /// Credentials of the workloads (write access).
    pub writer: SecretCredentials,
    /// Credentials of Grafana (read access).
    pub reader: SecretCredentials,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grafana {
    pub image: String,
    pub resources: ResourcesSpec,
    pub replicas: Replicas,
    pub anonymous_viewer: bool,
    pub service_type: ServiceType,
    pub node_port: Option<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Coap {
    pub image: String,
    pub resources: ResourcesSpec,
    pub port: i32,
    pub service_type: ServiceType,
    pub node_port: Option<i32>,
    pub replicas: Replicas,
    pub batch: BatchSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Simulator {
    pub image: String,
    pub resources: ResourcesSpec,
    pub sensors: i32,
    pub places: Vec<String>,
    pub interval_seconds: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aqi {
    pub image: String,
    pub resources: ResourcesSpec,
    pub source: String,
    pub poll_seconds: i32,
    /// The ingestor's region variable and its value, such as `AQI_REGION_COUNTRIES=GB,IE`.
    pub region: Option<(&'static str, String)>,
}

/// Everything the build step needs, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitor {
    pub namespace: String,
    pub names: Names,
    /// Owner reference to the IotMonitor, put on every child that dies with it.
    pub owner: OwnerReference,
    pub paused: bool,
    pub influx: Influx,
    pub grafana: Grafana,
    pub coap: Coap,
    pub simulator: Option<Simulator>,
    pub aqi: Option<Aqi>,
    /// `None` when autoscaling is off: components then run `replicas.min` pods.
    pub autoscaling: Option<ScalePolicy>,
}

/// Resolves an IotMonitor into the model the builders use.
pub fn validate(monitor: &IotMonitor) -> Result<Monitor, InvalidSpec> {
    let name = monitor
        .metadata
        .name
        .clone()
        .ok_or_else(|| InvalidSpec("the IotMonitor has no metadata.name".into()))?;
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidSpec(format!(
            "metadata.name is {} characters; use at most {MAX_NAME_LEN}",
            name.len()
        )));
    }
    let namespace = monitor.metadata.namespace.clone().ok_or_else(|| {
        InvalidSpec("the IotMonitor has no metadata.namespace; it is namespaced".into())
    })?;
    let owner = monitor
        .controller_owner_ref(&())
        .ok_or_else(|| InvalidSpec("the IotMonitor has no metadata.uid yet".into()))?;
    let spec = &monitor.spec;
    let names = Names::new(&name);

    let scaling = &spec.autoscaling;
    if scaling.min_replicas > scaling.max_replicas {
        return Err(InvalidSpec(
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas".into(),
        ));
    }
    if scaling.scale_in.cpu_percent >= scaling.scale_out.cpu_percent {
        return Err(InvalidSpec(
            "autoscaling.scaleIn.cpuPercent must be below autoscaling.scaleOut.cpuPercent".into(),
        ));
    }
    let default_bounds = Replicas {
        min: scaling.min_replicas,
        max: scaling.max_replicas,
    };
    let autoscaling = scaling.enabled.then(|| ScalePolicy {
        target_cpu_percent: scaling.scale_out.cpu_percent,
        scale_up_window_seconds: scaling.scale_out.hold_seconds,
        scale_down_window_seconds: scaling.scale_in.hold_seconds,
        scale_down_tolerance: tolerance(
            scaling.scale_in.cpu_percent,
            scaling.scale_out.cpu_percent,
        ),
        cooldown_seconds: scaling.cooldown_seconds,
    });

    let influx = resolve_influx(spec, &names, &namespace)?;
    let grafana = Grafana {
        image: spec.grafana.image.clone(),
        resources: (&spec.grafana.resources).into(),
        replicas: bounds("grafana", &spec.grafana.replicas, default_bounds)?,
        anonymous_viewer: spec.grafana.anonymous_viewer,
        service_type: spec.grafana.service_type,
        node_port: node_port("grafana", spec.grafana.service_type, spec.grafana.node_port)?,
    };
    let coap = Coap {
        image: image_or_default(spec.coap.image.as_deref(), "coap-server"),
        resources: (&spec.coap.resources).into(),
        port: spec.coap.port,
        service_type: spec.coap.service_type,
        node_port: node_port("coap", spec.coap.service_type, spec.coap.node_port)?,
        replicas: bounds("coap", &spec.coap.replicas, default_bounds)?,
        batch: spec.coap.batch.clone(),
    };
    let simulator = spec
        .simulator
        .enabled
        .then(|| resolve_simulator(&spec.simulator))
        .transpose()?;
    let aqi = spec
        .aqi
        .enabled
        .then(|| resolve_aqi(&spec.aqi))
        .transpose()?;

    Ok(Monitor {
        namespace,
        names,
        owner,
        paused: spec.paused,
        influx,
        grafana,
        coap,
        simulator,
        aqi,
        autoscaling,
    })
}

/// Scale-in threshold as the HPA's per-direction tolerance: with target T and threshold S the
/// HPA removes pods only when usage/T < 1 - tolerance, so tolerance = 1 - S/T (0.3 for 42/60).
/// Rounded to two decimals so the Quantity is short and stable.
fn tolerance(scale_in: i32, scale_out: i32) -> f64 {
    let exact = 1.0 - f64::from(scale_in) / f64::from(scale_out);
    (exact * 100.0).round() / 100.0
}

fn image_or_default(image: Option<&str>, workload: &str) -> String {
    image.map_or_else(
        || format!("{IMAGE_REPOSITORY}/{workload}:{WORKLOAD_VERSION}"),
        str::to_owned,
    )
}

fn bounds(
    component: &str,
    own: &ReplicaBounds,
    default: Replicas,
) -> Result<Replicas, InvalidSpec> {
    let resolved = Replicas {
        min: own.min_replicas.unwrap_or(default.min),
        max: own.max_replicas.unwrap_or(default.max),
    };
    if resolved.min > resolved.max {
        return Err(InvalidSpec(format!(
            "{component}.replicas resolves to min {} > max {} (unset bounds come from spec.autoscaling); set both bounds or adjust spec.autoscaling",
            resolved.min, resolved.max
        )));
    }
    Ok(resolved)
}

fn node_port(
    component: &str,
    service_type: ServiceType,
    port: Option<i32>,
) -> Result<Option<i32>, InvalidSpec> {
    match (service_type, port) {
        (ServiceType::ClusterIP, Some(_)) => Err(InvalidSpec(format!(
            "{component}.nodePort needs serviceType NodePort or LoadBalancer"
        ))),
        (_, port) => Ok(port),
    }
}

fn resolve_influx(
    spec: &crate::crd::IotMonitorSpec,
    names: &Names,
    namespace: &str,
) -> Result<Influx, InvalidSpec> {
    let db = &spec.influxdb.databases;
    if db.dht == db.aqi {
        return Err(InvalidSpec(
            "influxdb.databases.dht and influxdb.databases.aqi must differ".into(),
        ));
    }
    let generated = |role: &str| SecretCredentials {
        secret: names.credentials.clone(),
        username_key: format!("influxdb-{role}-username"),
        password_key: format!("influxdb-{role}-password"),
    };
    let (mode, url, writer, reader) = match &spec.influxdb.external {
        Some(external) => {
            let creds = SecretCredentials {
                secret: external.credentials_secret.clone(),
                username_key: external.username_key.clone(),
                password_key: external.password_key.clone(),
            };
            let url = external.url.trim_end_matches('/').to_owned();
            (InfluxMode::External, url, creds.clone(), creds)
        }
        None => {
            let storage = &spec.influxdb.storage;
            let internal = InternalInflux {
                image: spec.influxdb.image.clone(),
                resources: (&spec.influxdb.resources).into(),
                storage_size: storage.size.clone(),
                storage_class_name: storage.storage_class_name.clone(),
                delete_with_monitor: storage.delete_with_monitor,
                retention: spec.influxdb.retention.clone(),
            };
            let url = format!("http://{}.{namespace}.svc:{INFLUX_PORT}", names.influxdb);
            (
                InfluxMode::Internal(internal),
                url,
                generated("writer"),
                generated("reader"),
            )
        }
    };
    Ok(Influx {
        mode,
        url,
        dht_db: db.dht.clone(),
        aqi_db: db.aqi.clone(),
        writer,
        reader,
    })
}

fn resolve_simulator(spec: &SimulatorSpec) -> Result<Simulator, InvalidSpec> {
    if spec.places.is_empty() {
        return Err(InvalidSpec(
            "simulator.places needs at least one place, such as room1".into(),
        ));
    }
    if let Some(bad) = spec.places.iter().find(|p| p.contains(',')) {
        return Err(InvalidSpec(format!(
            "simulator.places entry {bad:?} contains a comma; use one list entry per place"
        )));
    }
    Ok(Simulator {
        image: image_or_default(spec.image.as_deref(), "sensor-sim"),
        resources: (&spec.resources).into(),
        sensors: spec.sensors,
        places: spec.places.clone(),
        interval_seconds: spec.interval_seconds,
    })
}

fn resolve_aqi(spec: &AqiSpec) -> Result<Aqi, InvalidSpec> {
    Ok(Aqi {
        image: image_or_default(spec.image.as_deref(), "aqi-ingestor"),
        resources: (&spec.resources).into(),
        source: spec.source.clone(),
        poll_seconds: spec.poll_seconds,
        region: spec.region.as_ref().map(resolve_region).transpose()?,
    })
}

/// The region as the ingestor's flag takes it (the CRD's CEL rules checked the values).
fn resolve_region(r: &RegionSpec) -> Result<(&'static str, String), InvalidSpec> {
    match (&r.countries, &r.bounding_box, &r.area) {
        (Some(c), None, None) => Ok(("AQI_REGION_COUNTRIES", c.join(","))),
        (None, Some(b), None) => Ok((
            "AQI_REGION_BOX",
            format!("{},{},{},{}", b.south, b.west, b.north, b.east),
        )),
        (None, None, Some(a)) => Ok((
            "AQI_REGION_AREA",
            format!("{},{},{}", a.latitude, a.longitude, a.radius_km),
        )),
        _ => Err(InvalidSpec(
            "aqi.region needs exactly one of countries, box or area".into(),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IotMonitor as the API server would hand it over: name, namespace, uid and the spec
    /// given as YAML.
    pub fn monitor(spec_yaml: &str) -> IotMonitor {
        let spec = serde_yaml::from_str(spec_yaml).expect("spec yaml");
        let mut monitor = IotMonitor::new("lab", spec);
        monitor.metadata.namespace = Some("iot".into());
        monitor.metadata.uid = Some("0000-uid".into());
        monitor.metadata.generation = Some(1);
        monitor
    }

    pub fn model(spec_yaml: &str) -> Monitor {
        validate(&monitor(spec_yaml)).expect("valid spec")
    }

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
        let err = validate(&monitor(
            "{grafana: {replicas: {maxReplicas: 2}}, autoscaling: {minReplicas: 3}}",
        ))
        .expect_err("min > max");
        assert!(err.0.contains("grafana.replicas"), "{err}");
    }

    #[test]
    fn scale_in_threshold_must_be_below_scale_out() {
        let err = validate(&monitor(
            "{autoscaling: {scaleIn: {cpuPercent: 70, holdSeconds: 900}}}",
        ))
        .expect_err("crossed thresholds");
        assert!(err.0.contains("scaleIn.cpuPercent"), "{err}");
    }

    #[test]
    fn external_influx_uses_the_users_secret_for_everyone() {
        let m = model(
            "{influxdb: {external: {url: 'http://influx.example:8086/', credentialsSecret: ext}}}",
        );
        assert_eq!(m.influx.mode, InfluxMode::External);
        assert_eq!(m.influx.url, "http://influx.example:8086");
        assert_eq!(m.influx.writer.secret, "ext");
        assert_eq!(m.influx.reader.password_key, "password");
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
        assert!(validate(&m).is_err());
    }
}
