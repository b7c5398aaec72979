//! Spec → resolved model (pure). Defaults are already filled by serde and the API server;
//! this step resolves what depends on several fields (replica bounds, image tags, URLs, names)
//! and rejects what CEL cannot see, with a message that says what to fix. What the spec refers
//! to (a Secret) was read before, by the dereference step, so this step stays pure.

mod alerting_schema;
mod alerts;
pub mod backup;
mod invalid;
mod model;
mod retention;

use std::collections::BTreeSet;

use kube::Resource;

pub use self::alerting_schema::{Allowed, EXPRESSION_UID, check_file, parse_duration};
pub use self::invalid::InvalidSpec;
pub use self::model::*;
pub use self::retention::{interval_name, retention_seconds};
use super::dereference::{Dereferenced, ReferencedSecret};

use crate::constants::{
    AQI_INGESTOR_IMAGE, COAP_SERVER_IMAGE, COAPS_PORT, IMAGE_REPOSITORY, INFLUX_PORT, MAX_NAME_LEN,
    SENSOR_SIM_IMAGE, WORKLOAD_VERSION,
};
use crate::crd::{
    AqiSpec, CoapSpec, DeviceSpec, IotMonitor, RegionSpec, ReplicaBounds, ServiceType,
    SimulatorSpec,
};

/// Resolves an IotMonitor, and what its spec refers to, into the model the builders use.
pub fn validate(
    monitor: &IotMonitor,
    refs: &Dereferenced,
) -> Result<ValidatedMonitor, InvalidSpec> {
    let name = monitor.metadata.name.clone().ok_or(InvalidSpec::NoName)?;
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidSpec::NameTooLong { len: name.len() });
    }
    let namespace = monitor
        .metadata
        .namespace
        .clone()
        .ok_or(InvalidSpec::NoNamespace)?;
    let owner = monitor
        .controller_owner_ref(&())
        .ok_or(InvalidSpec::NoUid)?;
    let spec = &monitor.spec;
    let names = Names::new(&name);

    let scaling = &spec.autoscaling;
    if scaling.min_replicas > scaling.max_replicas {
        return Err(InvalidSpec::AutoscalingBoundsCrossed);
    }
    if scaling.scale_in.cpu_percent >= scaling.scale_out.cpu_percent {
        return Err(InvalidSpec::ScaleInNotBelowScaleOut);
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

    let influx = resolve_influx(spec, &names, &namespace, refs)?;
    let grafana = Grafana {
        image: spec.grafana.image.clone(),
        resources: (&spec.grafana.resources).into(),
        scheduling: spec.grafana.scheduling.clone(),
        replicas: bounds("grafana", &spec.grafana.replicas, default_bounds)?,
        anonymous_viewer: spec.grafana.anonymous_viewer,
        service_type: spec.grafana.service_type,
        node_port: node_port(
            "grafana.nodePort",
            spec.grafana.service_type,
            spec.grafana.node_port,
        )?,
    };
    let simulator = spec
        .simulator
        .enabled
        .then(|| resolve_simulator(&spec.simulator))
        .transpose()?;
    let coap = resolve_coap(&spec.coap, default_bounds, simulator.as_ref())?;
    check_registry_size(&coap, simulator.as_ref())?;
    let aqi = spec
        .aqi
        .enabled
        .then(|| resolve_aqi(&spec.aqi))
        .transpose()?;
    let alerts = spec
        .alerts
        .enabled
        .then(|| alerts::resolve(&spec.alerts, refs, &namespace))
        .transpose()?;

    let network = spec.network_policy.enabled.then(|| Network {
        metrics_namespaces: spec.network_policy.metrics_namespace_selector.clone(),
        coap_sources: match (&spec.coap.allowed_sources, spec.coap.service_type) {
            (Some(listed), _) => CoapSources::Listed(listed.clone()),
            (None, ServiceType::ClusterIP) => CoapSources::OwnNamespace,
            (None, ServiceType::NodePort | ServiceType::LoadBalancer) => CoapSources::Any,
        },
        api_server: None,
        operator_namespace: None,
    });

    let (backup, restore) =
        backup::resolve(&spec.influxdb, &names, &namespace, refs, image_or_default);
    Ok(ValidatedMonitor {
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
        alerts,
        prometheus_operator: refs.prometheus_operator,
        network,
        backup,
        restore,
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
    component: &'static str,
    own: &ReplicaBounds,
    default: Replicas,
) -> Result<Replicas, InvalidSpec> {
    let resolved = Replicas {
        min: own.min_replicas.unwrap_or(default.min),
        max: own.max_replicas.unwrap_or(default.max),
    };
    if resolved.min > resolved.max {
        return Err(InvalidSpec::ComponentBoundsCrossed {
            component,
            min: resolved.min,
            max: resolved.max,
        });
    }
    Ok(resolved)
}

/// `port`, the node port of `field`, if the Service is exposed on the nodes at all.
fn node_port(
    field: &'static str,
    service_type: ServiceType,
    port: Option<i32>,
) -> Result<Option<i32>, InvalidSpec> {
    match (service_type, port) {
        (ServiceType::ClusterIP, Some(_)) => Err(InvalidSpec::NodePortWithoutExposure { field }),
        (_, port) => Ok(port),
    }
}

fn resolve_coap(
    spec: &CoapSpec,
    default_bounds: Replicas,
    simulator: Option<&Simulator>,
) -> Result<Coap, InvalidSpec> {
    let plain_node_port = node_port("coap.nodePort", spec.service_type, spec.node_port)?;
    let dtls_node_port = node_port("coap.dtlsNodePort", spec.service_type, spec.dtls_node_port)?;
    if plain_node_port.is_some() && !spec.plaintext {
        return Err(InvalidSpec::NodePortWithoutPlaintext);
    }
    if let (Some(port), Some(dtls)) = (plain_node_port, dtls_node_port)
        && port == dtls
    {
        return Err(InvalidSpec::SameNodePorts { port });
    }
    if spec.plaintext && spec.port == COAPS_PORT {
        return Err(InvalidSpec::PlaintextOnCoapsPort { port: spec.port });
    }
    Ok(Coap {
        image: image_or_default(spec.image.as_deref(), COAP_SERVER_IMAGE),
        resources: (&spec.resources).into(),
        scheduling: spec.scheduling.clone(),
        port: spec.port,
        service_type: spec.service_type,
        node_port: plain_node_port,
        dtls_node_port,
        plaintext: spec.plaintext,
        devices: resolve_devices(&spec.devices, simulator)?,
        replicas: bounds("coap", &spec.replicas, default_bounds)?,
        batch: spec.batch.clone(),
        rate_limit_per_source: spec.rate_limit_per_source,
    })
}

/// The user's devices, checked as the CRD's schema checks them (for objects it did not see),
/// and against the names of the simulator's sensors, which no schema can see.
fn resolve_devices(
    devices: &[DeviceSpec],
    simulator: Option<&Simulator>,
) -> Result<Vec<Device>, InvalidSpec> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(devices.len());
    for DeviceSpec { name, place } in devices {
        if !is_dns_label(name) {
            return Err(InvalidSpec::BadDeviceName { name: name.clone() });
        }
        if !is_place(place) {
            return Err(InvalidSpec::BadDevicePlace {
                name: name.clone(),
                place: place.clone(),
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(InvalidSpec::DuplicateDevice { name: name.clone() });
        }
        if let Some(sim) = simulator
            && is_simulated(name, sim.sensors)
        {
            return Err(InvalidSpec::DeviceNameOfSimulator {
                name: name.clone(),
                sensors: sim.sensors,
            });
        }
        out.push(Device {
            name: name.clone(),
            place: place.clone(),
        });
    }
    Ok(out)
}

/// `name` is one of the simulator's `sensors` sensors' (by its number, not a search: the
/// lists may hold thousands each).
fn is_simulated(name: &str, sensors: i32) -> bool {
    let number = name
        .strip_prefix("sim-")
        .and_then(|n| n.parse::<i32>().ok());
    // Spelled as the simulator spells it: `sim-01` is not sensor 1.
    number.is_some_and(|n| (1..=sensors).contains(&n) && simulated_device_name(n - 1) == name)
}

/// The most data (names and places, in bytes) the ConfigMap of places may hold: the API
/// server's limit of a ConfigMap. The Secret of keys stays below it within the CRD's bounds (a
/// key is shorter than a place can be).
pub(crate) const MAX_REGISTRY_BYTES: usize = 1024 * 1024;

/// The CRD bounds each list, but the user's devices and the simulator's sensors together, with
/// long places, can exceed what a ConfigMap holds; refused here rather than failing the apply.
fn check_registry_size(coap: &Coap, simulator: Option<&Simulator>) -> Result<(), InvalidSpec> {
    let simulated = simulator.map(|s| s.devices.as_slice()).unwrap_or_default();
    let all = coap.devices.iter().chain(simulated);
    let bytes: usize = all.clone().map(|d| d.name.len() + d.place.len()).sum();
    if bytes > MAX_REGISTRY_BYTES {
        return Err(InvalidSpec::RegistryTooLarge {
            devices: all.count(),
            bytes,
        });
    }
    Ok(())
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters: the CRD's pattern for a device name.
fn is_dns_label(s: &str) -> bool {
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 63
                && edge(first)
                && edge(last)
                && bytes.iter().all(|&b| edge(b) || b == b'-')
        }
        _ => false,
    }
}

/// 1-64 of `[A-Za-z0-9._-]`: the CRD's pattern for a place, and coap-server's for a tag.
fn is_place(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn resolve_influx(
    spec: &crate::crd::IotMonitorSpec,
    names: &Names,
    namespace: &str,
    refs: &Dereferenced,
) -> Result<Influx, InvalidSpec> {
    let db = &spec.influxdb.databases;
    if db.dht == db.aqi {
        return Err(InvalidSpec::SameDatabases);
    }
    // Checked with an external InfluxDB too: tiers there are refused, not ignored.
    let retention = retention::resolve(&spec.influxdb)?;
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
            check_credentials(&creds, refs.external_credentials.as_ref(), namespace, &url)?;
            (InfluxMode::External, url, creds.clone(), creds)
        }
        None => {
            let storage = &spec.influxdb.storage;
            let internal = InternalInflux {
                image: spec.influxdb.image.clone(),
                resources: (&spec.influxdb.resources).into(),
                scheduling: spec.influxdb.scheduling.clone(),
                storage_size: storage.size.clone(),
                storage_class_name: storage.storage_class_name.clone(),
                delete_with_monitor: storage.delete_with_monitor,
                retention,
                auto_grow_max: storage.auto_grow.as_ref().map(|g| g.max_size.clone()),
                limits: spec.influxdb.limits.clone(),
            };
            let url = format!("http://{}.{namespace}.svc:{INFLUX_PORT}", names.influxdb);
            (
                InfluxMode::Internal(Box::new(internal)),
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

/// The external credentials Secret must exist, opt in
/// ([`crate::constants::EXTERNAL_CREDENTIALS_LABEL`]), allow this URL if it names one, and hold
/// both keys: otherwise no pod is built on it, neither one that would send a Secret its owner
/// never meant for this, nor one with half the credentials.
fn check_credentials(
    creds: &SecretCredentials,
    found: Option<&ReferencedSecret>,
    namespace: &str,
    url: &str,
) -> Result<(), InvalidSpec> {
    let secret = || creds.secret.clone();
    let (keys, allowed_url) = match found {
        Some(ReferencedSecret::OptedIn { keys, url }) => (keys, url),
        Some(ReferencedSecret::NotOptedIn) => {
            return Err(InvalidSpec::CredentialsSecretNotOptedIn {
                secret: secret(),
                namespace: namespace.to_owned(),
            });
        }
        // Not read means not found: never build pods on a Secret nobody has seen.
        Some(ReferencedSecret::Missing) | None => {
            return Err(InvalidSpec::CredentialsSecretMissing { secret: secret() });
        }
    };
    if let Some(allowed) = allowed_url
        && allowed.trim_end_matches('/') != url
    {
        return Err(InvalidSpec::CredentialsUrlNotAllowed {
            secret: secret(),
            allowed: allowed.clone(),
            url: url.to_owned(),
        });
    }
    let missing: Vec<String> = [&creds.username_key, &creds.password_key]
        .into_iter()
        .filter(|key| !keys.contains(*key))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(InvalidSpec::CredentialsKeyMissing {
            secret: secret(),
            namespace: namespace.to_owned(),
            keys: missing,
        });
    }
    Ok(())
}

fn resolve_simulator(spec: &SimulatorSpec) -> Result<Simulator, InvalidSpec> {
    if spec.places.is_empty() {
        return Err(InvalidSpec::NoPlaces);
    }
    if let Some(bad) = spec.places.iter().find(|p| p.contains(',')) {
        return Err(InvalidSpec::PlaceWithComma { place: bad.clone() });
    }
    let devices = (0..spec.sensors)
        .zip(spec.places.iter().cycle())
        .map(|(i, place)| Device {
            name: simulated_device_name(i),
            place: place.clone(),
        })
        .collect();
    Ok(Simulator {
        image: image_or_default(spec.image.as_deref(), SENSOR_SIM_IMAGE),
        resources: (&spec.resources).into(),
        scheduling: spec.scheduling.clone(),
        sensors: spec.sensors,
        places: spec.places.clone(),
        interval_seconds: spec.interval_seconds,
        devices,
    })
}

fn resolve_aqi(spec: &AqiSpec) -> Result<Aqi, InvalidSpec> {
    Ok(Aqi {
        image: image_or_default(spec.image.as_deref(), AQI_INGESTOR_IMAGE),
        resources: (&spec.resources).into(),
        scheduling: spec.scheduling.clone(),
        source: spec.source.clone(),
        poll_seconds: spec.poll_seconds,
        region: spec.region.as_ref().map(resolve_region).transpose()?,
    })
}

/// The one form of region that is set. The CRD's CEL rule refuses none or several already;
/// this holds for objects the API server did not check (an older CRD).
fn resolve_region(r: &RegionSpec) -> Result<Region, InvalidSpec> {
    match (&r.countries, &r.bounding_box, &r.area) {
        (Some(c), None, None) => Ok(Region::Countries(c.clone())),
        (None, Some(b), None) => Ok(Region::Box {
            south: b.south,
            west: b.west,
            north: b.north,
            east: b.east,
        }),
        (None, None, Some(a)) => Ok(Region::Area {
            latitude: a.latitude,
            longitude: a.longitude,
            radius_km: a.radius_km,
        }),
        _ => Err(InvalidSpec::RegionNotOneForm),
    }
}

#[cfg(test)]
mod tests;
