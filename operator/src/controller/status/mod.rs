//! Status: conditions and per-component replicas computed (purely) from what was applied and
//! what the children report. A condition's `lastTransitionTime` changes only when its status
//! flips, so an unchanged world yields an identical status and no write.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

mod autoscaling;
mod backup;
mod patch;
pub(crate) mod storage;

pub(crate) use self::autoscaling::{AUTOSCALING, turned_bad};
pub(crate) use self::backup::warnings as backup_warnings;
pub(crate) use self::patch::{StatusError, patch_status};
use super::apply::Applied;
use super::validate::{InfluxMode, ValidatedMonitor};
use crate::crd::{ComponentStatus, ComponentsStatus, EndpointsStatus, IotMonitorStatus};

pub(crate) const READY: &str = "Ready";
pub(crate) const PROGRESSING: &str = "Progressing";
pub(crate) const DEGRADED: &str = "Degraded";

/// One condition to set; `status` true means "True".
struct Cond<'a> {
    type_: &'a str,
    status: bool,
    reason: &'a str,
    message: String,
}

fn set(conditions: &mut Vec<Condition>, c: Cond<'_>, generation: Option<i64>, now: &Time) {
    let status = if c.status { "True" } else { "False" };
    put(
        conditions, c.type_, status, c.reason, c.message, generation, now,
    );
}

/// `set` with any status string (`Unknown` included).
fn put(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) {
    let previous = conditions.iter().position(|x| x.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(old) if old.status == status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

fn component(desired: i32, ready: i32) -> ComponentStatus {
    ComponentStatus {
        desired_replicas: desired,
        ready_replicas: ready,
        summary: format!("{ready}/{desired}"),
    }
}

fn disabled(summary: &str) -> ComponentStatus {
    ComponentStatus {
        desired_replicas: 0,
        ready_replicas: 0,
        summary: summary.to_owned(),
    }
}

/// Replicas of a Deployment, and whether its latest spec is fully rolled out.
fn deployment_state(d: &Deployment) -> (ComponentStatus, bool) {
    let desired = d.spec.replicas.unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let rolled_out = status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.replicas.unwrap_or(0) <= desired;
    (component(desired, ready), rolled_out)
}

fn stateful_set_state(s: &StatefulSet) -> (ComponentStatus, bool) {
    let desired = s.spec.replicas.unwrap_or(1);
    let status = s.status.clone().unwrap_or_default();
    let ready = status.ready_replicas.unwrap_or(0);
    let rolled_out = status.observed_generation >= s.metadata.generation
        && status.updated_replicas.unwrap_or(0) >= desired
        && status.current_revision == status.update_revision;
    (component(desired, ready), rolled_out)
}

fn find<'a, K: kube::Resource>(objects: &'a [K], name: &str) -> Option<&'a K> {
    objects
        .iter()
        .find(|o| o.meta().name.as_deref() == Some(name))
}

/// Where the port named `port_name` of a Service can be reached, as a person would type it;
/// `None` if it has no such port.
fn endpoint(
    scheme: &str,
    service: Option<&Service>,
    namespace: &str,
    port_name: &str,
) -> Option<String> {
    let service = service?;
    let name = service.metadata.name.as_deref()?;
    let spec = service.spec.as_ref()?;
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(port_name))?;
    let (port, node_port) = (service_port.port, service_port.node_port);
    match spec.type_.as_deref() {
        Some("LoadBalancer") => {
            let ingress = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.first())
                .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
            Some(match ingress {
                Some(host) => format!("{scheme}://{host}:{port}"),
                None => "pending load balancer".to_owned(),
            })
        }
        Some("NodePort") => node_port.map(|p| format!("{scheme}://<node>:{p}")),
        _ => Some(format!("{scheme}://{name}.{namespace}.svc:{port}")),
    }
}

/// Whether an applied HPA kept the per-direction tolerance (the HPAConfigurableTolerance
/// feature); clusters without it drop the field on write.
fn tolerance_supported(applied: &Applied) -> bool {
    applied.autoscalers.iter().all(|hpa| {
        hpa.spec
            .behavior
            .as_ref()
            .and_then(|b| b.scale_down.as_ref())
            .is_some_and(|r| r.tolerance.is_some())
    })
}

/// The status after a successful apply.
pub(crate) fn reconciled(
    model: &ValidatedMonitor,
    applied: &Applied,
    previous: Option<&IotMonitorStatus>,
    generation: Option<i64>,
    now: Time,
) -> IotMonitorStatus {
    let names = &model.names;
    let mut not_ready = Vec::new();
    let mut rolling = Vec::new();
    let mut track = |label: &str, state: Option<(ComponentStatus, bool)>| {
        let (status, rolled_out) = match state {
            Some(s) => s,
            None => (component(1, 0), false),
        };
        if status.ready_replicas < status.desired_replicas.max(1) {
            not_ready.push(format!("{label} {}", status.summary));
        }
        if !rolled_out {
            rolling.push(label.to_owned());
        }
        Some(status)
    };

    let influxdb = match model.influx.mode {
        InfluxMode::Internal(_) => {
            let state = find(&applied.stateful_sets, &names.influxdb).map(stateful_set_state);
            let state = match (state, &applied.influxdb_trouble) {
                (Some((mut status, rolled_out)), Some(trouble)) => {
                    status.summary = format!("{} {}", status.summary, trouble.describe());
                    Some((status, rolled_out))
                }
                (state, _) => state,
            };
            track("influxdb", state)
        }
        InfluxMode::External => Some(disabled("External")),
    };
    let deployment = |name: &str| find(&applied.deployments, name).map(deployment_state);
    let grafana = track("grafana", deployment(&names.grafana));
    let coap_server = track("coap-server", deployment(&names.coap_server));
    let simulator = match model.simulator {
        Some(_) => track("sensor-sim", deployment(&names.simulator)),
        None => Some(disabled("Disabled")),
    };
    let aqi_ingestor = match model.aqi {
        Some(_) => track("aqi-ingestor", deployment(&names.aqi_ingestor)),
        None => Some(disabled("Disabled")),
    };

    let mut conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let ready = not_ready.is_empty();
    let mut ready_message = if ready {
        "every component is available".to_owned()
    } else {
        format!("waiting for ready replicas: {}", not_ready.join(", "))
    };
    if model.autoscaling.is_some() && !tolerance_supported(applied) {
        ready_message.push_str(
            "; note: this cluster ignores the HPA scale-down tolerance (HPAConfigurableTolerance is off), so scale-in follows the cluster-wide 10% tolerance instead of scaleIn.cpuPercent",
        );
    }
    set(
        &mut conditions,
        Cond {
            type_: READY,
            status: ready,
            reason: if ready {
                "AllComponentsReady"
            } else {
                "ComponentsNotReady"
            },
            message: ready_message,
        },
        generation,
        &now,
    );
    let progressing = !rolling.is_empty();
    set(
        &mut conditions,
        Cond {
            type_: PROGRESSING,
            status: progressing,
            reason: if progressing {
                "RollingOut"
            } else {
                "RolloutComplete"
            },
            message: if progressing {
                format!("rolling out: {}", rolling.join(", "))
            } else {
                "every component runs the current spec".to_owned()
            },
        },
        generation,
        &now,
    );
    set(
        &mut conditions,
        Cond {
            type_: DEGRADED,
            status: false,
            reason: "ReconcileSucceeded",
            message: "the last reconcile applied the whole spec".to_owned(),
        },
        generation,
        &now,
    );

    let coap_service = find(&applied.services, &names.coap_server);
    match autoscaling::state(&applied.autoscalers, &now) {
        Some(state) => put(
            &mut conditions,
            AUTOSCALING,
            state.health.status(),
            &state.reason,
            state.message,
            generation,
            &now,
        ),
        None => conditions.retain(|c| c.type_ != AUTOSCALING),
    }

    let backup = backup::backup_status(
        model,
        &applied.runs,
        previous.and_then(|p| p.backup.as_ref()),
    );
    let restore = backup::restore_status(
        model,
        &applied.runs,
        previous.and_then(|p| p.restore.as_ref()),
    );
    for (type_, verdict) in [
        (
            backup::BACKUP_FAILING,
            backup::backup_condition(model, backup.as_ref()),
        ),
        (
            backup::RESTORE_FAILING,
            backup::restore_condition(restore.as_ref()),
        ),
    ] {
        match verdict {
            Some(v) => put(
                &mut conditions,
                type_,
                v.status,
                &v.reason,
                v.message,
                generation,
                &now,
            ),
            None => conditions.retain(|c| c.type_ != type_),
        }
    }

    IotMonitorStatus {
        backup,
        restore,
        observed_generation: generation,
        conditions,
        components: ComponentsStatus {
            influxdb,
            grafana,
            coap_server,
            simulator,
            aqi_ingestor,
        },
        endpoints: EndpointsStatus {
            grafana: endpoint(
                "http",
                find(&applied.services, &names.grafana),
                &model.namespace,
                "http",
            ),
            coap: endpoint("coaps", coap_service, &model.namespace, "coaps"),
            coap_plaintext: endpoint("coap", coap_service, &model.namespace, "coap"),
        },
        devices: Some(i32::try_from(model.devices().count()).unwrap_or(i32::MAX)),
        // Measured every few minutes, not on each reconcile: `storage::set` replaces it.
        storage: previous.and_then(|p| p.storage.clone()),
    }
}

/// The status after a failed reconcile: `Degraded` with the error; the rest is kept.
pub(crate) fn failed(
    previous: Option<&IotMonitorStatus>,
    generation: Option<i64>,
    reason: &str,
    message: String,
    now: Time,
) -> IotMonitorStatus {
    let degraded = Cond {
        type_: DEGRADED,
        status: true,
        reason,
        message,
    };
    let mut status = previous_with(previous, generation, degraded, &now);
    if !status.conditions.iter().any(|c| c.type_ == READY) {
        set(
            &mut status.conditions,
            Cond {
                type_: READY,
                status: false,
                reason: "ReconcileFailed",
                message: "the stack has not been applied yet; see the Degraded condition"
                    .to_owned(),
            },
            generation,
            &now,
        );
    }
    status
}

/// The status while `spec.paused` is true.
pub(crate) fn paused(
    previous: Option<&IotMonitorStatus>,
    generation: Option<i64>,
    now: Time,
) -> IotMonitorStatus {
    let paused = Cond {
        type_: PROGRESSING,
        status: false,
        reason: "Paused",
        message: "spec.paused is true: the operator leaves every child as it is".to_owned(),
    };
    previous_with(previous, generation, paused, &now)
}

/// The previous status, for `generation`, with one condition set; the rest is kept.
fn previous_with(
    previous: Option<&IotMonitorStatus>,
    generation: Option<i64>,
    condition: Cond<'_>,
    now: &Time,
) -> IotMonitorStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    set(&mut status.conditions, condition, generation, now);
    status
}

#[cfg(test)]
mod tests;
