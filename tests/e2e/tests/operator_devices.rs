//! The device registry on the real control plane: the Secret of keys and the ConfigMap of
//! places hold one entry per device (the simulator's sensors included), a key deleted from the
//! Secret comes back different, a device removed from the spec leaves both, and coap-server's
//! Role lets it read those two objects and nothing else, as the API server's own authorizer
//! says.

use iot_e2e::operator_support;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use iot_testkit::cluster::{default_timeout, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{Api, Patch, PatchParams, PostParams};
use operator_support::{Stack, wait_ready};

const MONITOR: &str = "apiVersion: iot.operator.dev/v1alpha1
kind: IotMonitor
metadata: {name: lab}
spec:
  coap:
    devices:
      - {name: door, place: hall}
      - {name: oven, place: kitchen}
  simulator: {sensors: 2}
  aqi: {enabled: false}
";

/// The keys of the devices Secret, decoded.
async fn keys(secrets: &Api<Secret>) -> Result<BTreeMap<String, String>> {
    let data = secrets.get("lab-devices").await?.data.unwrap_or_default();
    Ok(data
        .into_iter()
        .map(|(name, key)| (name, String::from_utf8_lossy(&key.0).into_owned()))
        .collect())
}

async fn places(maps: &Api<ConfigMap>) -> Result<BTreeMap<String, String>> {
    Ok(maps.get("lab-devices").await?.data.unwrap_or_default())
}

/// Whether the API server's authorizer lets coap-server's account `verb` the `resource` named
/// `name` (any, when `None`) in `ns`.
async fn coap_server_may(
    stack: &Stack,
    verb: &str,
    resource: &str,
    name: Option<&str>,
) -> Result<bool> {
    let ns = stack.ns.name();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:lab-coap-server")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_owned()),
                verb: Some(verb.into()),
                resource: Some(resource.into()),
                name: name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(stack.cluster.client())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Waits for an Event about the monitor with `reason` and `note`.
async fn wait_event(stack: &Stack, reason: &str, note: &str) -> Result<()> {
    let events = stack.api::<Event>();
    wait_for(
        &format!("Event {reason}: {note}"),
        default_timeout(),
        || async {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let seen: Vec<_> = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note.clone())
                .collect();
            if seen.iter().any(|n| n == note) {
                Ok(())
            } else {
                Err(format!("{reason} Events: {seen:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn device_keys_are_issued_rotated_on_deletion_and_revoked_with_the_device() -> Result<()> {
    let stack = Stack::start("operator-devices", MONITOR).await?;
    let monitor = wait_ready(&stack.monitors, "lab").await?;
    let status = monitor.status.unwrap_or_default();
    ensure!(status.devices == Some(4), "{:?}", status.devices);
    ensure!(
        status.endpoints.coap.as_deref()
            == Some(&*format!(
                "coaps://lab-coap-server.{}.svc:5684",
                stack.ns.name()
            )),
        "{:?}",
        status.endpoints
    );
    let secrets = stack.api::<Secret>();
    let maps = stack.api::<ConfigMap>();

    // One key per device, one place per device.
    let issued = keys(&secrets).await?;
    ensure!(
        issued.keys().eq(["door", "oven", "sim-1", "sim-2"]),
        "{:?}",
        issued.keys()
    );
    ensure!(
        issued
            .values()
            .all(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_alphanumeric())),
        "keys are 32 alphanumeric characters"
    );
    let expected_places = [
        ("door", "hall"),
        ("oven", "kitchen"),
        ("sim-1", "room1"),
        ("sim-2", "room1"),
    ]
    .map(|(d, p)| (d.to_owned(), p.to_owned()));
    ensure!(places(&maps).await? == BTreeMap::from(expected_places));

    // coap-server's Role names that Secret and ConfigMap only, and the authorizer agrees.
    let role = stack.api::<Role>().get("lab-coap-server").await?;
    let rules = role.rules.unwrap_or_default();
    ensure!(rules.len() == 1, "{rules:?}");
    ensure!(rules[0].resource_names.as_deref() == Some(&["lab-devices".to_owned()][..]));
    for (verb, resource, name, allowed) in [
        ("get", "secrets", Some("lab-devices"), true),
        ("watch", "secrets", Some("lab-devices"), true),
        ("list", "configmaps", Some("lab-devices"), true),
        ("get", "secrets", Some("lab-credentials"), false),
        ("list", "secrets", None, false),
        ("update", "secrets", Some("lab-devices"), false),
        ("get", "configmaps", Some("lab-grafana-datasources"), false),
    ] {
        ensure!(
            coap_server_may(&stack, verb, resource, name).await? == allowed,
            "coap-server may {verb} {resource} {name:?}: expected {allowed}"
        );
    }
    let coap = stack.api::<Deployment>().get("lab-coap-server").await?;
    let pod = coap.spec.template.spec.context("a pod spec")?;
    ensure!(pod.service_account_name.as_deref() == Some("lab-coap-server"));

    // A key deleted from the Secret comes back, different; the others stay as they were.
    let delete_door = serde_json::json!([{"op": "remove", "path": "/data/door"}]);
    secrets
        .patch(
            "lab-devices",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(delete_door)?),
        )
        .await?;
    let rotated = wait_for("door's new key", default_timeout(), || async {
        let now = keys(&secrets).await.map_err(|e| e.to_string())?;
        match now.get("door") {
            Some(key) if key != &issued["door"] => Ok(now),
            other => Err(format!(
                "door's key: {}",
                if other.is_some() {
                    "the old one"
                } else {
                    "none"
                }
            )),
        }
    })
    .await?;
    for name in ["oven", "sim-1", "sim-2"] {
        ensure!(rotated[name] == issued[name], "{name}'s key changed");
    }
    wait_event(&stack, "DeviceKeyRotated", "key of device door rotated").await?;

    // A device removed from the spec leaves the Secret and the ConfigMap.
    let only_door =
        serde_json::json!({"spec": {"coap": {"devices": [{"name": "door", "place": "hall"}]}}});
    stack
        .monitors
        .patch("lab", &PatchParams::default(), &Patch::Merge(&only_door))
        .await?;
    wait_for("oven to be revoked", default_timeout(), || async {
        let keys = keys(&secrets).await.map_err(|e| e.to_string())?;
        let places = places(&maps).await.map_err(|e| e.to_string())?;
        if keys.contains_key("oven") || places.contains_key("oven") {
            Err(format!("keys {:?}, places {places:?}", keys.keys()))
        } else {
            Ok(())
        }
    })
    .await?;
    ensure!(
        keys(&secrets).await?["door"] == rotated["door"],
        "door kept its key"
    );
    wait_event(
        &stack,
        "DevicesRevoked",
        "1 device(s) revoked, their keys removed: oven",
    )
    .await?;
    let monitor = wait_ready(&stack.monitors, "lab").await?;
    ensure!(monitor.status.and_then(|s| s.devices) == Some(3));
    stack.stop().await
}
