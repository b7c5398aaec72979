//! The storage forecast on a real InfluxDB: a 64 MiB volume on the real node, points written
//! into it from this machine, and the operator's `status.storage`, the `StorageExhaustedSoon`
//! condition with its Warning Event, and autoGrow's patch of the claim.
//!
//! The local cluster's volume provisioner (rancher's local-path, hostPath directories) cannot
//! resize a volume: the test's StorageClass allows expansion, so the API server accepts the
//! larger request, and the volume keeps its size. So the test checks the patch as the API
//! server took it (one step, 64Mi → 96Mi, and no second step while the resize is pending),
//! not a larger filesystem. Needs the real node and the images (`make test`).

use iot_e2e::stack_influx::StackInflux;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use iot_e2e::operator_support::{Operator, condition, setup};
use iot_operator::crd::IotMonitor;
use iot_testkit::cluster::wait_for;
use iot_testkit::real_node::{self, RealNode};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const MEASURE_EVERY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_volume_filling_fast_reports_its_fill_date_and_autogrow_asks_for_more() -> Result<()> {
    let (cluster, ns) = setup("storage-forecast").await?;
    RealNode::get(&cluster).await?;
    // A class of its own (cluster-scoped: named after the namespace) that allows expansion.
    let class_name = format!("{}-expandable", ns.name());
    let classes: Api<StorageClass> = Api::all(cluster.client());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": class_name},
                "provisioner": "rancher.io/local-path",
                "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Delete",
                "allowVolumeExpansion": true,
            }))?,
        )
        .await?;
    let result = run(&cluster, ns.name(), &class_name).await;
    classes
        .delete(&class_name, &DeleteParams::default())
        .await?;
    result
}

async fn run(cluster: &iot_testkit::cluster::Cluster, ns: &str, class_name: &str) -> Result<()> {
    let operator = Operator::start_with_storage(cluster.client(), ns, MEASURE_EVERY);
    let image = real_node::image_ref("influxdb")?;
    let on_kwok = "nodeSelector: {type: kwok}";
    let yaml = format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: lab}}\nspec:\n  \
         influxdb: {{image: {image}, retention: INF, storage: {{size: 64Mi, storageClassName: {class_name}, \
         autoGrow: {{maxSize: 128Mi}}}}, {}}}\n  grafana: {{{on_kwok}}}\n  coap: {{{on_kwok}}}\n  \
         simulator: {{enabled: false}}\n  aqi: {{enabled: false}}\n  autoscaling: {{enabled: false}}\n",
        real_node::component_scheduling()
    );
    cluster.apply_yaml(Some(ns), &yaml).await?;
    let monitors: Api<IotMonitor> = Api::namespaced(cluster.client(), ns);

    // 1. The first measurement, before any reading: the volume, nothing fills it.
    let first = wait_storage(&monitors, "the first measurement", |s| {
        s.capacity == "64Mi" && s.capacity_bytes == 64 << 20
    })
    .await?;
    eprintln!("first: {first:?}");

    // 2. Points from this machine into an INF retention, 500 every 100 ms (5,000 a second)
    // while the test watches, so every measurement's window sees them: the volume fills, soon.
    let influx = std::sync::Arc::new(Influx::connect(cluster, ns).await?);
    influx.query("CREATE DATABASE load").await?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let influx = influx.clone();
        tokio::spawn(async move {
            let first_ns = jiff::Timestamp::now().as_nanosecond() as i64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut written = 0u64;
            // Bounded: at most 30 minutes of writes.
            for batch in 0..18_000i64 {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                written += influx.write(first_ns + batch * 500_000_000, 500).await?;
            }
            anyhow::Ok(written)
        })
    };

    let filling = wait_storage(&monitors, "a fill date", |s| {
        s.forecast == "Fills" && s.fill_date.is_some() && s.used_bytes > first.used_bytes
    })
    .await?;
    eprintln!("filling: {filling:?}");
    ensure!(
        filling.bytes_per_point > 0.0 && filling.points_per_second > 0.0,
        "{filling:?}"
    );

    // 3. Within 7 days: the condition is true, autoGrow asked for half as much again.
    let monitor = wait_for(
        "StorageExhaustedSoon to be True",
        Duration::from_secs(120),
        || async {
            let m = monitors.get("lab").await.map_err(|e| e.to_string())?;
            match condition(&m, "StorageExhaustedSoon") {
                Some((s, reason, _))
                    if s == "True"
                        && ["VolumeGrowing", "VolumeResizing"].contains(&reason.as_str()) =>
                {
                    Ok(m)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let (_, _, message) = condition(&monitor, "StorageExhaustedSoon").context("condition")?;
    ensure!(message.contains("fills in"), "{message}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client(), ns);
    let request = |claim: &PersistentVolumeClaim| {
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default()
    };
    ensure!(request(&claims.get("lab-influxdb-data").await?) == "96Mi");

    // 4. Events: one Warning with the condition's reason, and the growth.
    let events = wait_for("the Events", Duration::from_secs(60), || async {
        let list = Api::<Event>::namespaced(cluster.client(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        let warned = list.items.iter().any(|e| {
            e.type_.as_deref() == Some("Warning")
                && matches!(
                    e.reason.as_deref(),
                    Some("VolumeGrowing" | "VolumeResizing")
                )
        });
        let grown = reasons.iter().any(|r| r == "VolumeGrown");
        (warned && grown)
            .then_some(reasons.clone())
            .ok_or(format!("{reasons:?}"))
    })
    .await?;
    eprintln!("events: {events:?}");

    // 5. Three more measurements while the resize is pending: no second step, and the
    // operator's own apply keeps the larger request (spec.storage.size is still 64Mi).
    let measured = monitors.get("lab").await?;
    for round in 0..3 {
        tokio::time::sleep(MEASURE_EVERY * 2).await;
        let claim = claims.get("lab-influxdb-data").await?;
        ensure!(
            request(&claim) == "96Mi",
            "round {round}: {}",
            request(&claim)
        );
    }
    let (status, reason, _) =
        condition(&monitors.get("lab").await?, "StorageExhaustedSoon").context("condition")?;
    ensure!(
        status == "True" && reason == "VolumeResizing",
        "{status} {reason}; was {:?}",
        condition(&measured, "StorageExhaustedSoon")
    );
    // Every point written is stored: none lost to the measurements.
    stop.send(true)?;
    let written = writer.await??;
    let counted = influx.count().await?;
    ensure!(
        counted == written && written > 0,
        "InfluxDB holds {counted} of {written} points"
    );
    operator.stop().await
}

async fn wait_storage(
    monitors: &Api<IotMonitor>,
    what: &str,
    check: impl Fn(&iot_operator::crd::StorageStatus) -> bool,
) -> Result<iot_operator::crd::StorageStatus> {
    Ok(wait_for(what, Duration::from_secs(240), || async {
        let m = monitors.get("lab").await.map_err(|e| e.to_string())?;
        let storage = m.status.and_then(|s| s.storage);
        match storage {
            Some(s) if check(&s) => Ok(s),
            other => Err(format!("status.storage {other:?}")),
        }
    })
    .await?)
}

/// InfluxDB through its Service's cluster IP, as its admin (this machine is the node).
struct Influx(StackInflux);

impl Influx {
    async fn connect(cluster: &iot_testkit::cluster::Cluster, ns: &str) -> Result<Self> {
        Ok(Self(
            StackInflux::connect(cluster, ns, Duration::from_secs(30)).await?,
        ))
    }

    async fn query(&self, q: &str) -> Result<serde_json::Value> {
        self.0.query("load", q).await
    }

    /// Writes `n` points of 8 series, 1 µs apart from `first_ns`; returns how many.
    async fn write(&self, first_ns: i64, n: i64) -> Result<u64> {
        let body: String = (0..n)
            .map(|i| {
                format!(
                    "load,sensor=s{} value={},other={}i {}\n",
                    i % 8,
                    (i * 7919) % 1000,
                    i,
                    first_ns + i * 1_000
                )
            })
            .collect();
        self.0.write("load", body).await?;
        Ok(u64::try_from(n)?)
    }

    async fn count(&self) -> Result<u64> {
        let answer = self.query("SELECT count(value) FROM load").await?;
        Ok(answer["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0))
    }
}
