//! The air-quality ingestor: exactly one replica (two would write every reading twice), and
//! `Recreate` so a rollout never runs old and new side by side.

use k8s_openapi::api::apps::v1::Deployment;

use super::labels::Component;
use super::pod::{env, influx_writer_env, workload_container};
use super::workload::{Rollout, deployment, workload_pods};
use crate::controller::validate::{Region, ValidatedMonitor};

pub fn build(model: &ValidatedMonitor) -> Option<Deployment> {
    let aqi = model.aqi.as_ref()?;
    let mut env_vars = vec![
        env("AQI_SOURCE", aqi.source.clone()),
        env("AQI_POLL_SECONDS", aqi.poll_seconds.to_string()),
    ];
    if let Some(region) = &aqi.region {
        let (name, value) = region_env(region);
        env_vars.push(env(name, value));
    }
    env_vars.extend(influx_writer_env(&model.influx, &model.influx.aqi_db));
    let container =
        workload_container("aqi-ingestor", &aqi.image, &aqi.resources, vec![], env_vars);
    Some(deployment(
        model,
        &model.names.aqi_ingestor,
        Component::AqiIngestor,
        Some(1),
        Rollout::Recreate,
        workload_pods(model, Component::AqiIngestor, &aqi.scheduling, container),
    ))
}

/// The ingestor's flag for a region (`--region-countries`, `--region-box`, `--region-area`),
/// as its environment variable.
fn region_env(region: &Region) -> (&'static str, String) {
    match region {
        Region::Countries(codes) => ("AQI_REGION_COUNTRIES", codes.join(",")),
        Region::Box {
            south,
            west,
            north,
            east,
        } => ("AQI_REGION_BOX", format!("{south},{west},{north},{east}")),
        Region::Area {
            latitude,
            longitude,
            radius_km,
        } => (
            "AQI_REGION_AREA",
            format!("{latitude},{longitude},{radius_km}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{model, monitor, present};
    use crate::controller::validate::{InvalidSpec, validate};

    /// The ingestor's `AQI_REGION_*` variables for `spec`.
    fn region(spec: &str) -> Vec<(String, String)> {
        let d = build(&model(spec)).expect("aqi deployment");
        let pod = d.spec.template.spec.expect("pod spec");
        pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name.starts_with("AQI_REGION_"))
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn each_form_of_region_becomes_the_ingestor_flag() {
        let pair = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(region("{}"), vec![]);
        assert_eq!(
            region("{aqi: {region: {countries: [GB, IE]}}}"),
            pair("AQI_REGION_COUNTRIES", "GB,IE")
        );
        assert_eq!(
            region("{aqi: {region: {box: {south: 49.9, west: -8.2, north: 60.9, east: 1.8}}}}"),
            pair("AQI_REGION_BOX", "49.9,-8.2,60.9,1.8")
        );
        assert_eq!(
            region("{aqi: {region: {area: {latitude: 51.5, longitude: -0.12, radiusKm: 50}}}}"),
            pair("AQI_REGION_AREA", "51.5,-0.12,50")
        );
    }

    #[test]
    fn two_forms_of_region_are_refused() {
        let m = monitor(
            "{aqi: {region: {countries: [GB], area: {latitude: 1, longitude: 2, radiusKm: 3}}}}",
        );
        let e = validate(&m, &present(&m)).expect_err("two forms");
        assert_eq!(e, InvalidSpec::RegionNotOneForm);
    }
}
