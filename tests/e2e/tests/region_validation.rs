//! `spec.aqi.region` against the real API server: each of its three forms is accepted as
//! written, the CRD's CEL rules reject bad coordinates, an empty or doubled form, with a
//! message that says what to fix, and the operator hands the region to the ingestor.

use iot_e2e::operator_support;

use anyhow::{Result, bail, ensure};
use iot_testkit::cluster::ClusterError;
use k8s_openapi::api::apps::v1::Deployment;
use operator_support::{Stack, first_container_env, setup, wait_env};

fn monitor(name: &str, region: &str) -> String {
    format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: {name}}}\n\
         spec: {{aqi: {{region: {region}}}}}\n"
    )
}

#[tokio::test]
async fn each_form_of_region_is_accepted_as_written() -> Result<()> {
    let (cluster, ns) = setup("region-valid").await?;
    for (name, region, field, want) in [
        (
            "countries",
            "{countries: [GB, IE]}",
            "countries",
            serde_json::json!(["GB", "IE"]),
        ),
        (
            "box",
            "{box: {south: 49.9, west: -8.2, north: 61, east: 2}}",
            "box",
            serde_json::json!({"south": 49.9, "west": -8.2, "north": 61, "east": 2}),
        ),
        (
            "area",
            "{area: {latitude: -33.92, longitude: 18.42, radiusKm: 25}}",
            "area",
            serde_json::json!({"latitude": -33.92, "longitude": 18.42, "radiusKm": 25}),
        ),
    ] {
        let applied = cluster
            .apply_yaml(Some(ns.name()), &monitor(name, region))
            .await?;
        let got = &applied[0].data["spec"]["aqi"]["region"];
        ensure!(got[field] == want, "{name}: stored as {got}");
    }
    Ok(())
}

/// (region, a fragment of the message the API server must answer with)
const INVALID: &[(&str, &str)] = &[
    ("{}", "exactly one of countries, box or area"),
    (
        "{countries: [GB], area: {latitude: 51.5, longitude: 0, radiusKm: 10}}",
        "exactly one of countries, box or area",
    ),
    ("{countries: []}", "should have at least 1 items"),
    ("{countries: [gb]}", "countries are two capital letters"),
    ("{countries: [GBR]}", "may not be more than 2"),
    (
        "{box: {south: 60, west: -8, north: 50, east: 2}}",
        "box.south must be below north",
    ),
    (
        "{box: {south: 50, west: 10, north: 60, east: -10}}",
        "box.west must be below east",
    ),
    (
        "{box: {south: -91, west: -8, north: 50, east: 2}}",
        "box.south must be between -90 and 90",
    ),
    (
        "{box: {south: 50, west: -8, north: 90.5, east: 2}}",
        "box.north must be between -90 and 90",
    ),
    (
        "{box: {south: 50, west: -181, north: 60, east: 2}}",
        "box.west must be between -180 and 180",
    ),
    (
        "{box: {south: 50, west: -8, north: 60, east: 180.1}}",
        "box.east must be between -180 and 180",
    ),
    ("{box: {south: 50, west: -8, north: 60}}", "Required value"),
    (
        "{area: {latitude: 95, longitude: 0, radiusKm: 10}}",
        "area.latitude must be between -90 and 90",
    ),
    (
        "{area: {latitude: 51.5, longitude: -200, radiusKm: 10}}",
        "area.longitude must be between -180 and 180",
    ),
    (
        "{area: {latitude: 51.5, longitude: 0, radiusKm: 0}}",
        "area.radiusKm must be above 0",
    ),
    (
        "{area: {latitude: 51.5, longitude: 0, radiusKm: -5}}",
        "area.radiusKm must be above 0",
    ),
];

#[tokio::test]
async fn bad_regions_are_rejected_with_a_message_that_says_what_to_fix() -> Result<()> {
    let (cluster, ns) = setup("region-invalid").await?;
    let mut failures = Vec::new();
    for (i, (region, expected)) in INVALID.iter().enumerate() {
        match cluster
            .apply_yaml(Some(ns.name()), &monitor(&format!("bad-{i}"), region))
            .await
        {
            Ok(_) => failures.push(format!("{region}: accepted")),
            Err(ClusterError::Kube(kube::Error::Api(status)))
                if status.message.contains(expected) => {}
            Err(other) => failures.push(format!("{region}: expected {expected:?}, got {other}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} bad regions were not rejected as expected:\n{}",
            failures.len(),
            INVALID.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_operator_hands_the_region_to_the_ingestor_and_follows_a_change() -> Result<()> {
    let stack = Stack::start(
        "region-operator",
        &monitor(
            "lab",
            "{box: {south: 49.9, west: -8.2, north: 61, east: 2}}",
        ),
    )
    .await?;
    let deployments = stack.api::<Deployment>();
    let ingestor = "lab-aqi-ingestor";
    wait_env(&deployments, ingestor, "AQI_REGION_BOX", "49.9,-8.2,61,2").await?;

    stack
        .cluster
        .apply_yaml(
            Some(stack.ns.name()),
            &monitor("lab", "{countries: [GB, IE]}"),
        )
        .await?;
    wait_env(&deployments, ingestor, "AQI_REGION_COUNTRIES", "GB,IE").await?;
    let d = deployments.get(ingestor).await?;
    let stale = first_container_env(&d, "AQI_REGION_BOX");
    ensure!(
        stale.is_none(),
        "the old form is gone: AQI_REGION_BOX={stale:?}"
    );
    stack.stop().await
}
