//! What the controller's tests share: a monitor as the API server hands it over, the result
//! of dereferencing it, its validated model, a synced child cache, and a context talking to the
//! mock API server. One place, so no test module imports another's test code.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::context::Context;
use super::dereference::{Dereferenced, ReferencedSecret};
use super::known_state::{Cached, ChildCache, Feed, WriteMemo};
use super::mock_api::MockApi;
use super::validate::{ValidatedMonitor, validate};
use crate::crd::IotMonitor;
use crate::metrics::Metrics;

/// An IotMonitor `lab` in namespace `iot` as the API server would hand it over: uid,
/// generation 1 and the spec given as YAML.
pub fn monitor(spec_yaml: &str) -> IotMonitor {
    let spec = serde_yaml::from_str(spec_yaml).expect("spec yaml");
    let mut monitor = IotMonitor::new("lab", spec);
    monitor.metadata.namespace = Some("iot".into());
    monitor.metadata.uid = Some("0000-uid".into());
    monitor.metadata.generation = Some(1);
    monitor
}

/// What the dereference step finds when every Secret the spec names exists, opts in, and has
/// the keys it names.
pub fn present(monitor: &IotMonitor) -> Dereferenced {
    let external_credentials =
        monitor
            .spec
            .influxdb
            .external
            .as_ref()
            .map(|e| ReferencedSecret::OptedIn {
                keys: BTreeSet::from([e.username_key.clone(), e.password_key.clone()]),
                url: None,
            });
    let opted_in = |keys| ReferencedSecret::OptedIn { keys, url: None };
    let contact_point_secrets = monitor
        .spec
        .alerts
        .contact_points
        .iter()
        .filter_map(|c| {
            let webhook = c.webhook.as_ref().map(|w| &w.url_secret);
            webhook.or(c.slack.as_ref().map(|s| &s.url_secret))
        })
        .map(|r| (r.name.clone(), opted_in(BTreeSet::from([r.key.clone()]))))
        .chain(monitor.spec.alerts.smtp.iter().filter_map(|s| {
            let keys = BTreeSet::from([s.user_key.clone(), s.password_key.clone()]);
            Some((s.credentials_secret.clone()?, opted_in(keys)))
        }))
        .fold(
            BTreeMap::new(),
            |mut all: BTreeMap<String, ReferencedSecret>, (name, keys)| {
                if let (
                    Some(ReferencedSecret::OptedIn { keys: have, .. }),
                    ReferencedSecret::OptedIn { keys: more, .. },
                ) = (all.get_mut(&name), &keys)
                {
                    have.extend(more.iter().cloned());
                } else {
                    all.insert(name, keys);
                }
                all
            },
        );
    let backup_credentials = monitor
        .spec
        .influxdb
        .backup
        .as_ref()
        .and_then(|b| b.destination.s3.as_ref())
        .map(|s3| {
            opted_in(BTreeSet::from([
                s3.access_key_id_key.clone(),
                s3.secret_access_key_key.clone(),
            ]))
        });
    Dereferenced {
        external_credentials,
        contact_point_secrets,
        alert_rule_config_maps: BTreeMap::new(),
        prometheus_operator: false,
        backup_credentials,
    }
}

/// The validated model of a spec that must be valid.
pub fn model(spec_yaml: &str) -> ValidatedMonitor {
    let monitor = monitor(spec_yaml);
    validate(&monitor, &present(&monitor)).expect("valid spec")
}

/// A synced cache holding `objects` (typed by their `kind`), as the watches would after their
/// first list. Every kind is cached, also those with no object yet.
pub fn cache_of<'a>(objects: impl IntoIterator<Item = &'a Value>) -> ChildCache {
    let objects: Vec<&Value> = objects.into_iter().collect();
    let mut cache = ChildCache::default();
    list_into::<Deployment>(&mut cache, &objects);
    list_into::<StatefulSet>(&mut cache, &objects);
    list_into::<Service>(&mut cache, &objects);
    list_into::<ConfigMap>(&mut cache, &objects);
    list_into::<HorizontalPodAutoscaler>(&mut cache, &objects);
    list_into::<NetworkPolicy>(&mut cache, &objects);
    list_into::<Secret>(&mut cache, &objects);
    list_into::<PersistentVolumeClaim>(&mut cache, &objects);
    list_into::<ServiceAccount>(&mut cache, &objects);
    list_into::<Role>(&mut cache, &objects);
    list_into::<RoleBinding>(&mut cache, &objects);
    list_into::<CronJob>(&mut cache, &objects);
    list_into::<Job>(&mut cache, &objects);
    cache
}

/// Feeds the `objects` of kind `K` into a new store of `cache` as a watch's first list.
fn list_into<K: Cached>(cache: &mut ChildCache, objects: &[&Value]) {
    let mut feed = Feed::<K>::new(cache, Arc::new(WriteMemo::default()));
    feed.take(watcher::Event::Init);
    for object in objects.iter().filter(|o| o["kind"] == K::KIND) {
        let object: K = serde_json::from_value((*object).clone()).expect("a typed child");
        feed.take(watcher::Event::InitApply(object));
    }
    feed.take(watcher::Event::InitDone);
}

/// A reconcile context whose client talks to a fresh mock API server, with the monitor of
/// `spec_yaml` stored there (so status writes find it).
pub fn context_with(spec_yaml: &str) -> (Arc<Context>, MockApi, IotMonitor) {
    let (client, api) = MockApi::start();
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    let reporter = Reporter {
        controller: "iot-operator-test".into(),
        instance: None,
    };
    let monitor = monitor(spec_yaml);
    api.put(
        MONITOR_PATH,
        serde_json::to_value(&monitor).expect("monitor json"),
    );
    (
        Arc::new(Context::new(client, metrics, reporter)),
        api,
        monitor,
    )
}

/// Where the mock API server keeps the monitor of [`context_with`].
pub const MONITOR_PATH: &str = "/apis/iot.operator.dev/v1alpha1/namespaces/iot/iotmonitors/lab";
