//! Spec → resolved model (pure). Defaults are already filled by serde and the API server;
//! this step resolves what depends on several fields (replica bounds, image tags, URLs, names)
//! and rejects what CEL cannot see, with a message that says what to fix. What the spec refers
//! to (a Secret) was read before, by the dereference step, so this step stays pure.

mod invalid;
mod model;

use kube::Resource;

pub use self::invalid::InvalidSpec;
pub use self::model::*;
use super::dereference::{Dereferenced, ReferencedSecret};

use crate::constants::{
    AQI_INGESTOR_IMAGE, COAP_SERVER_IMAGE, IMAGE_REPOSITORY, INFLUX_PORT, MAX_NAME_LEN,
    SENSOR_SIM_IMAGE, WORKLOAD_VERSION,
};
use crate::crd::{AqiSpec, IotMonitor, RegionSpec, ReplicaBounds, ServiceType, SimulatorSpec};

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
        node_port: node_port("grafana", spec.grafana.service_type, spec.grafana.node_port)?,
    };
    let coap = Coap {
        image: image_or_default(spec.coap.image.as_deref(), COAP_SERVER_IMAGE),
        resources: (&spec.coap.resources).into(),
        scheduling: spec.coap.scheduling.clone(),
        port: spec.coap.port,
        service_type: spec.coap.service_type,
        node_port: node_port("coap", spec.coap.service_type, spec.coap.node_port)?,
        replicas: bounds("coap", &spec.coap.replicas, default_bounds)?,
        batch: spec.coap.batch.clone(),
        rate_limit_per_source: spec.coap.rate_limit_per_source,
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

fn node_port(
    component: &'static str,
    service_type: ServiceType,
    port: Option<i32>,
) -> Result<Option<i32>, InvalidSpec> {
    match (service_type, port) {
        (ServiceType::ClusterIP, Some(_)) => {
            Err(InvalidSpec::NodePortWithoutExposure { component })
        }
        (_, port) => Ok(port),
    }
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
            check_credentials(&creds, refs.external_credentials.as_ref())?;
            let url = external.url.trim_end_matches('/').to_owned();
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
                retention: spec.influxdb.retention.clone(),
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

/// The external credentials Secret must exist with both keys, or every pod would fail to start
/// with an error far from its cause.
fn check_credentials(
    creds: &SecretCredentials,
    found: Option<&ReferencedSecret>,
) -> Result<(), InvalidSpec> {
    let secret = || creds.secret.clone();
    let keys = match found {
        Some(ReferencedSecret::Keys(keys)) => keys,
        // Not read means not found: never build pods on a Secret nobody has seen.
        Some(ReferencedSecret::Missing) | None => {
            return Err(InvalidSpec::CredentialsSecretMissing { secret: secret() });
        }
    };
    for key in [&creds.username_key, &creds.password_key] {
        if !keys.contains(key) {
            return Err(InvalidSpec::CredentialsKeyMissing {
                secret: secret(),
                key: key.clone(),
            });
        }
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
    Ok(Simulator {
        image: image_or_default(spec.image.as_deref(), SENSOR_SIM_IMAGE),
        resources: (&spec.resources).into(),
        scheduling: spec.scheduling.clone(),
        sensors: spec.sensors,
        places: spec.places.clone(),
        interval_seconds: spec.interval_seconds,
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
