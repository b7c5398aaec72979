//! Alerting on the real control plane: the alerting ConfigMap and Grafana's mount, a contact
//! point naming a missing Secret (or key), or one that has not opted in, held back with a
//! condition that says so while Grafana keeps its last configuration (and applied once the
//! Secret opts in with the key, with no spec change; Grafana deleted when the opt-in is taken
//! off, built again when it is back),
//! and the users' labelled rule ConfigMaps copied in, or refused with a condition when Grafana
//! could not read them.

use iot_e2e::operator_support;

use anyhow::{Result, ensure};
use iot_testkit::cluster::{default_timeout, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use operator_support::{Stack, condition, wait_ready};
use serde_json::json;

use iot_operator::crd::IotMonitor;

/// The label by which a Secret's owner lets `spec.alerts` use it.
const ALERTING_LABEL: &str = "iot.operator.dev/allow-alerting";

const MONITOR: &str = "apiVersion: iot.operator.dev/v1alpha1
kind: IotMonitor
metadata: {name: lab}
spec:
  aqi: {enabled: false}
";

/// The fields of the Degraded condition once its message contains `says`.
async fn wait_degraded(monitors: &Api<IotMonitor>, says: &str) -> Result<(String, String)> {
    Ok(wait_for(
        &format!("Degraded saying {says:?}"),
        default_timeout(),
        || async {
            let m = monitors.get("lab").await.map_err(|e| e.to_string())?;
            match condition(&m, "Degraded") {
                Some((status, reason, message)) if status == "True" && message.contains(says) => {
                    Ok((reason, message))
                }
                other => Err(format!("Degraded={other:?}")),
            }
        },
    )
    .await?)
}

async fn patch_spec(monitors: &Api<IotMonitor>, spec: serde_json::Value) -> Result<()> {
    monitors
        .patch(
            "lab",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await?;
    Ok(())
}

/// The Secret and key environment variable `name` of Grafana's container comes from.
fn secret_env(d: &Deployment, name: &str) -> Option<(String, String)> {
    let pod = d.spec.template.spec.as_ref()?;
    let env = pod.containers.first()?.env.as_ref()?;
    let key = env
        .iter()
        .find(|e| e.name == name)?
        .value_from
        .as_ref()?
        .secret_key_ref
        .clone()?;
    Some((key.name, key.key))
}

fn files(cm: &ConfigMap) -> Vec<String> {
    cm.data.clone().unwrap_or_default().into_keys().collect()
}

#[tokio::test]
async fn a_contact_point_without_its_opted_in_secret_holds_grafana_back_until_it_is_there()
-> Result<()> {
    let stack = Stack::start("alerts-secret", MONITOR).await?;
    wait_ready(&stack.monitors, "lab").await?;
    let maps: Api<ConfigMap> = stack.api();
    let deployments: Api<Deployment> = stack.api();
    let alerting = maps.get("lab-grafana-alerting").await?;
    ensure!(
        files(&alerting) == ["iot-rules.yaml"],
        "{:?}",
        files(&alerting)
    );
    let grafana = deployments.get("lab-grafana").await?;

    // A webhook whose Secret does not exist.
    let hook = json!({"alerts": {"contactPoints": [
        {"name": "ops", "webhook": {"urlSecret": {"name": "alert-urls", "key": "ops"}}}
    ]}});
    patch_spec(&stack.monitors, hook.clone()).await?;
    let (reason, message) = wait_degraded(&stack.monitors, "alert-urls").await?;
    ensure!(reason == "MissingCredentials", "{reason}: {message}");
    ensure!(message.contains("does not exist"), "{message}");
    // Nothing of the new configuration reached Grafana: neither file nor pod template.
    let held = deployments.get("lab-grafana").await?;
    // Its generation counts changes of its spec (the Deployment controller's status updates
    // leave it).
    ensure!(
        held.metadata.generation == grafana.metadata.generation,
        "Grafana's Deployment was written: {:?} -> {:?}",
        grafana.metadata.generation,
        held.metadata.generation
    );
    ensure!(
        secret_env(&held, "ALERT_CONTACT_0_URL").is_none(),
        "the contact point's variable reached Grafana"
    );
    let alerting_now = maps.get("lab-grafana-alerting").await?;
    ensure!(
        alerting_now.metadata.resource_version == alerting.metadata.resource_version,
        "the alerting ConfigMap was written"
    );

    // The Secret with the key but without its owner's opt-in: nothing of it reaches Grafana,
    // and the condition gives the command that opts in.
    let url = "http://198.18.0.9:9/hook";
    let ns = stack.ns.name().to_owned();
    let secrets: Api<Secret> = stack.api();
    stack
        .cluster
        .apply_yaml(
            Some(&ns),
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: alert-urls}}\nstringData: {{ops: '{url}'}}\n"
            ),
        )
        .await?;
    // A spec change looks again at once (an unlabelled Secret is not watched).
    let mut hook_later = hook.clone();
    hook_later["alerts"]["silentAfter"] = "11m".into();
    patch_spec(&stack.monitors, hook_later).await?;
    let command = format!("kubectl label secret alert-urls -n {ns} {ALERTING_LABEL}=true");
    let (reason, message) = wait_degraded(&stack.monitors, &command).await?;
    ensure!(reason == "CredentialsNotAllowed", "{reason}: {message}");
    let held = deployments.get("lab-grafana").await?;
    ensure!(
        held.metadata.generation == grafana.metadata.generation,
        "Grafana's Deployment was written while the Secret had not opted in"
    );

    // Opted in, but without the key (kept in `other` only): the key is named. Labelling wakes
    // the monitor through the watch of labelled Secrets.
    secrets
        .patch(
            "alert-urls",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {ALERTING_LABEL: "true"}},
                "data": {"ops": null},
                "stringData": {"other": "x"},
            })),
        )
        .await?;
    let (_, message) = wait_degraded(&stack.monitors, "has no key \"ops\"").await?;
    ensure!(message.contains("alert-urls"), "{message}");
    let held = deployments.get("lab-grafana").await?;
    ensure!(
        held.metadata.generation == grafana.metadata.generation,
        "Grafana's Deployment was written while the key was missing"
    );

    // With the key, Grafana gets the contact point, its URL from the Secret alone.
    secrets
        .patch(
            "alert-urls",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"ops": url}})),
        )
        .await?;
    // The labelled Secret is watched: its change wakes the monitor without a spec change.
    let notifications = wait_for("the contact point applied", default_timeout(), || async {
        let cm = maps
            .get("lab-grafana-alerting")
            .await
            .map_err(|e| e.to_string())?;
        let data = cm.data.unwrap_or_default();
        data.get("iot-notifications.yaml")
            .cloned()
            .ok_or_else(|| format!("{:?}", data.keys().collect::<Vec<_>>()))
    })
    .await?;
    wait_ready(&stack.monitors, "lab").await?;
    ensure!(
        notifications.contains("$ALERT_CONTACT_0_URL"),
        "{notifications}"
    );
    for cm in maps.list(&Default::default()).await? {
        let text = serde_json::to_string(&cm.data)?;
        ensure!(
            !text.contains(url),
            "the URL is in ConfigMap {:?}",
            cm.metadata.name
        );
    }
    let grafana = deployments.get("lab-grafana").await?;
    let from = secret_env(&grafana, "ALERT_CONTACT_0_URL");
    ensure!(
        from == Some(("alert-urls".to_owned(), "ops".to_owned())),
        "{from:?}"
    );

    // The owner takes the opt-in off: Grafana, which reads the Secret, goes (no pod keeps
    // sending its value), and the condition says how to opt in again.
    secrets
        .patch(
            "alert-urls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ALERTING_LABEL: null}}})),
        )
        .await?;
    let (reason, _) = wait_degraded(&stack.monitors, &command).await?;
    ensure!(reason == "CredentialsNotAllowed", "{reason}");
    wait_for(
        "Grafana's Deployment deleted",
        default_timeout(),
        || async {
            match deployments.get_opt("lab-grafana").await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let coap = deployments.get_opt("lab-coap-server").await?;
    ensure!(coap.is_some(), "only the reader of the Secret goes");

    // Opted in again: Grafana is built anew with the contact point.
    secrets
        .patch(
            "alert-urls",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {ALERTING_LABEL: "true"}}})),
        )
        .await?;
    // (Ready may still say True from before: Degraded is the condition the refusal set.)
    let from = wait_for("Grafana built again", default_timeout(), || async {
        match deployments.get_opt("lab-grafana").await {
            Ok(Some(d)) => secret_env(&d, "ALERT_CONTACT_0_URL").ok_or("no variable".to_owned()),
            Ok(None) => Err("not there".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    ensure!(
        from == ("alert-urls".to_owned(), "ops".to_owned()),
        "{from:?}"
    );
    stack.stop().await
}

const USER_RULES: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: team-rules
  labels: {iot.operator.dev/alert-rules: lab}
data:
  kitchen.yaml: |
    apiVersion: 1
    groups:
      - orgId: 1
        name: kitchen
        folder: Team
        interval: 1m
        rules:
          - uid: kitchen-hot
            title: Kitchen hot
            condition: A
            data:
              - refId: A
                datasourceUid: DATASOURCE
                relativeTimeRange: {from: 600, to: 0}
                model: {query: "SELECT last(value) FROM temperature WHERE place = 'kitchen'"}
            noDataState: OK
            execErrState: Error
            for: 5m
"#;

#[tokio::test]
async fn labelled_rule_config_maps_reach_grafana_and_bad_ones_are_refused() -> Result<()> {
    let stack = Stack::start("alerts-user-rules", MONITOR).await?;
    wait_ready(&stack.monitors, "lab").await?;
    let maps: Api<ConfigMap> = stack.api();
    let ns = stack.ns.name();

    // Labelled for this monitor: copied in, without a spec change (the label's watch wakes it).
    stack
        .cluster
        .apply_yaml(Some(ns), &USER_RULES.replace("DATASOURCE", "iot-dht"))
        .await?;
    let copied = wait_for("the user's rules copied", default_timeout(), || async {
        let cm = maps
            .get("lab-grafana-alerting")
            .await
            .map_err(|e| e.to_string())?;
        let keys = files(&cm);
        if keys.contains(&"user.team-rules.kitchen.yaml".to_owned()) {
            Ok(cm)
        } else {
            Err(format!("{keys:?}"))
        }
    })
    .await?;

    // A datasource Grafana does not have: refused, and the copy stays as it was.
    stack
        .cluster
        .apply_yaml(Some(ns), &USER_RULES.replace("DATASOURCE", "prometheus"))
        .await?;
    let (reason, message) = wait_degraded(&stack.monitors, "team-rules").await?;
    ensure!(reason == "InvalidAlertRules", "{reason}: {message}");
    ensure!(message.contains("datasourceUid"), "{message}");
    let now = maps.get("lab-grafana-alerting").await?;
    ensure!(
        now.metadata.resource_version == copied.metadata.resource_version,
        "the alerting ConfigMap was written with a refused file"
    );

    // Deleted: its rules leave Grafana.
    maps.delete("team-rules", &Default::default()).await?;
    wait_for("the user's rules removed", default_timeout(), || async {
        let cm = maps
            .get("lab-grafana-alerting")
            .await
            .map_err(|e| e.to_string())?;
        let keys = files(&cm);
        if keys == ["iot-rules.yaml"] {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        }
    })
    .await?;
    wait_ready(&stack.monitors, "lab").await?;
    stack.stop().await
}
