//! The air-quality ingestor: exactly one replica (two would write every reading twice), and
//! `Recreate` so a rollout never runs old and new side by side.

use k8s_openapi::api::apps::v1::Deployment;

use super::labels::Component;
use super::pod::{env, influx_credentials, workload_container};
use super::workload::deployment;
use crate::controller::validate::{InfluxMode, Monitor};

pub fn build(monitor: &Monitor) -> Option<Deployment> {
    let aqi = monitor.aqi.as_ref()?;
    let influx = &monitor.influx;
    let mut env_vars = vec![
        env("AQI_SOURCE", aqi.source.clone()),
        env("AQI_POLL_SECONDS", aqi.poll_seconds.to_string()),
        env("INFLUX_URL", influx.url.clone()),
        env("INFLUX_DB", influx.aqi_db.clone()),
        // As for the CoAP server: our writer is no admin, the setup sidecar made the database.
        env(
            "CREATE_DATABASE",
            (influx.mode == InfluxMode::External).to_string(),
        ),
    ];
    if let Some((name, value)) = &aqi.region {
        env_vars.push(env(name, value.clone()));
    }
    env_vars.extend(influx_credentials(&influx.writer));
    let container =
        workload_container("aqi-ingestor", &aqi.image, &aqi.resources, vec![], env_vars);
    Some(deployment(
        monitor,
        &monitor.names.aqi_ingestor,
        Component::AqiIngestor,
        Some(1),
        true,
        container,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::validate::tests::model;

    fn env_of(spec: &str) -> Vec<(String, String)> {
        let d = build(&model(spec)).expect("aqi deployment");
        let pod = d.spec.template.spec.expect("pod spec");
        pod.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.name.starts_with("AQI_"))
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn each_form_of_region_becomes_the_ingestor_flag() {
        let region = |spec: &str| {
            env_of(spec)
                .into_iter()
                .filter(|(k, _)| k.starts_with("AQI_REGION_"))
                .collect::<Vec<_>>()
        };
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
        let spec = crate::controller::validate::tests::monitor(
            "{aqi: {region: {countries: [GB], area: {latitude: 1, longitude: 2, radiusKm: 3}}}}",
        );
        let e = crate::controller::validate::validate(&spec).expect_err("two forms");
        assert!(e.to_string().contains("exactly one of"), "{e}");
    }
}
