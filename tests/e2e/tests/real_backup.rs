//! The backup and restore drill, on the real node with real containers: readings written
//! through coap-server, a scheduled backup (`* * * * *`) taken by the CronJob (InfluxDB's own
//! `influxd backup -portable` over its RPC port, stored on the backup volume by iot-backup),
//! `status.backup` checked; then the IotMonitor and its data volume deleted, the monitor
//! created again with `restoreFrom: latest` while a sender keeps sending, and every reading of
//! both counted in InfluxDB. A second restore into the now full volume is refused, with
//! `RestoreFailing`, and nothing is overwritten. Needs the images in the real node's containerd
//! (`images/build.sh --load coap-server influxdb iot-backup`).

use iot_e2e::stack_influx::StackInflux;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use iot_e2e::operator_support::{Stack, condition, wait_deleted, wait_ready};
use iot_operator::crd::IotMonitor;
use iot_testkit::bins::workspace_bin;
use iot_testkit::cluster::{Cluster, default_timeout, wait_for};
use iot_testkit::process::{Process, Service};
use iot_testkit::real_node::{self, RealNode};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams};

/// Plain CoAP's node port for this test's monitor (the host's sensors send to it).
const NODE_PORT: i32 = 31784;
/// Before the backup: sensors × rounds readings of each measurement.
const BEFORE: (u32, u32) = (4, 25);
/// During the restore.
const DURING: (u32, u32) = (2, 15);

fn monitor_yaml(restore: bool) -> Result<String> {
    let restore = if restore {
        ", restoreFrom: {backup: latest}"
    } else {
        ""
    };
    let influxdb = real_node::influxdb_spec(&format!(
        "backup: {{schedule: '* * * * *', keep: 3, destination: {{volume: {{size: 64Mi}}}}}}{restore}"
    ))?;
    Ok(format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: lab}}\nspec:\n  \
         influxdb: {influxdb}\n  \
         coap: {{plaintext: true, serviceType: NodePort, nodePort: {NODE_PORT}, {}}}\n  \
         grafana: {{nodeSelector: {{type: kwok}}}}\n  simulator: {{enabled: false}}\n  \
         aqi: {{enabled: false}}\n  autoscaling: {{enabled: false}}\n",
        real_node::component_scheduling()
    ))
}

/// sensor-sim on this machine, `sensors` × `rounds` readings of temperature and humidity at
/// `place`, each sent until stored (a 5.03 is honoured, a lost datagram sent again).
fn sensors(
    node: &RealNode,
    place: &str,
    (sensors, rounds): (u32, u32),
) -> impl FnMut(std::net::SocketAddr) -> std::process::Command {
    let server = format!("{}:{NODE_PORT}", node.address);
    let place = place.to_owned();
    move |http| {
        let mut cmd = std::process::Command::new(workspace_bin("sensor-sim"));
        cmd.args([
            "--server",
            &server,
            "--sensors",
            &sensors.to_string(),
            "--rounds",
            &rounds.to_string(),
            "--interval",
            "0.2",
            "--places",
            &place,
            "--http-addr",
            &http.to_string(),
        ]);
        cmd
    }
}

/// The stack's InfluxDB as its admin.
struct Influx(StackInflux);

impl Influx {
    async fn connect(cluster: &Cluster, ns: &str) -> Result<Self> {
        Ok(Self(
            StackInflux::connect(cluster, ns, Duration::from_secs(5)).await?,
        ))
    }

    /// Readings of `measurement` in `dht` at `place`.
    async fn count(&self, measurement: &str, place: &str) -> Result<u64> {
        let q = format!("SELECT count(value) FROM {measurement} WHERE place = '{place}'");
        self.0.first_number("dht", &q).await
    }

    /// Waits until both measurements at `place` hold `want` readings (never more).
    async fn wait_counts(&self, place: &str, want: u64) -> Result<()> {
        let got = wait_for(
            &format!("{want} readings of each measurement at {place}"),
            default_timeout(),
            || async {
                let mut got = Vec::new();
                for m in ["temperature", "humidity"] {
                    got.push(self.count(m, place).await.map_err(|e| e.to_string())?);
                }
                if got.iter().any(|&n| n > want) {
                    // More than sent is a failure no wait can mend: report it as found.
                    return Ok(got);
                }
                if got.iter().all(|&n| n == want) {
                    Ok(got)
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .await?;
        ensure!(
            got.iter().all(|&n| n == want),
            "{place}: {got:?} readings, {want} sent"
        );
        Ok(())
    }
}

/// Minutes since the epoch of a CronJob run: the suffix of its Job's name.
fn scheduled_minute(job: &str) -> Option<i64> {
    job.rsplit('-').next()?.parse().ok()
}

#[tokio::test]
async fn a_scheduled_backup_restores_every_reading_into_a_new_monitor() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let node = RealNode::get(&cluster).await?;
    let stack = Stack::start("backup-drill", &monitor_yaml(false)?).await?;
    let ns = stack.ns.name().to_owned();
    wait_ready(&stack.monitors, "lab").await?;
    let influx = Influx::connect(&cluster, &ns).await?;

    // 1. N readings, each stored (sensor-sim exits 0 only when every one was).
    let mut before = Process::spawn(
        "sensor-sim (before)",
        &mut sensors(&node, "before", BEFORE)(iot_testkit::ports::free_tcp_addr()),
    );
    let status = before
        .wait_exit(default_timeout())
        .await
        .map_err(|e| anyhow::anyhow!("{e}: {}", before.log()))?;
    ensure!(status.success(), "sensor-sim: {}", before.log());
    let written_at = jiff::Timestamp::now();
    let n = u64::from(BEFORE.0 * BEFORE.1);
    influx.wait_counts("before", n).await?;

    // 2. A scheduled run that started after the last write.
    let monitor = wait_for(
        "a scheduled backup taken after the writes",
        Duration::from_secs(240),
        || async {
            let m = stack.monitors.get("lab").await.map_err(|e| e.to_string())?;
            let success = m
                .status
                .as_ref()
                .and_then(|s| s.backup.as_ref())
                .and_then(|b| b.last_success.clone());
            match &success {
                Some(s)
                    if scheduled_minute(&s.job)
                        .is_some_and(|minute| minute * 60 > written_at.as_second()) =>
                {
                    Ok(m)
                }
                _ => Err(format!(
                    "{:?}",
                    m.status.as_ref().and_then(|s| s.backup.clone())
                )),
            }
        },
    )
    .await?;
    let backup = monitor
        .status
        .as_ref()
        .and_then(|s| s.backup.clone())
        .context("status.backup")?;
    let success = backup.last_success.context("lastSuccess")?;
    ensure!(
        success.name.starts_with("lab-") && success.name.ends_with(".tar.gz") && success.size > 0,
        "{success:?}"
    );
    ensure!(
        backup.available.contains(&success.name),
        "{:?}",
        backup.available
    );
    let failing = condition(&monitor, "BackupFailing");
    ensure!(
        failing
            .as_ref()
            .is_some_and(|(s, r, _)| s == "False" && r == "BackupSucceeded"),
        "BackupFailing {failing:?}"
    );
    eprintln!("backup {} of {} bytes", success.name, success.size);

    // 3. The monitor and its data volume go; the backup volume and the credentials stay.
    stack
        .monitors
        .delete("lab", &DeleteParams::foreground())
        .await?;
    wait_deleted(&stack.monitors, "lab").await?;
    let pods: Api<Pod> = stack.api();
    wait_for("the monitor's pods to go", default_timeout(), || async {
        let left = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=lab"))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/name"))
                    != Some(&"backup".to_owned())
            })
            .count();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} pods"))
        }
    })
    .await?;
    let claims: Api<PersistentVolumeClaim> = stack.api();
    claims
        .delete("lab-influxdb-data", &DeleteParams::default())
        .await?;
    wait_deleted(&claims, "lab-influxdb-data").await?;
    ensure!(
        claims.get_opt("lab-backups").await?.is_some(),
        "the backup volume went"
    );

    // 4. Created again with restoreFrom: latest, while sensors send.
    let started = Instant::now();
    cluster.apply_yaml(Some(&ns), &monitor_yaml(true)?).await?;
    let during = Service::start(
        "sensor-sim (during)",
        "/healthz",
        sensors(&node, "during", DURING),
    )
    .await;
    let restored = wait_for("the restore to finish", default_timeout() * 2, || async {
        let m = stack.monitors.get("lab").await.map_err(|e| e.to_string())?;
        let restore = m.status.as_ref().and_then(|s| s.restore.clone());
        match &restore {
            Some(r) if r.phase == "Restored" => Ok(r.clone()),
            Some(r) if r.phase != "Running" => Ok(r.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    ensure!(restored.phase == "Restored", "{restored:?}");
    ensure!(
        restored.backup.as_deref() == Some(success.name.as_str()),
        "restored {:?}, the latest is {}",
        restored.backup,
        success.name
    );
    eprintln!(
        "restore: {:.1} s from apply to Restored ({})",
        started.elapsed().as_secs_f64(),
        restored.message
    );
    let mut during = during;
    let status = during
        .process
        .wait_exit(default_timeout())
        .await
        .map_err(|e| anyhow::anyhow!("{e}: {}", during.process.log()))?;
    ensure!(status.success(), "sensor-sim: {}", during.process.log());

    // 5. Every one of the N readings is back, and every one sent during the restore stored.
    let influx = Influx::connect(&cluster, &ns).await?;
    influx.wait_counts("before", n).await?;
    influx
        .wait_counts("during", u64::from(DURING.0 * DURING.1))
        .await?;
    let monitor = wait_ready(&stack.monitors, "lab").await?;
    let failing = condition(&monitor, "RestoreFailing");
    ensure!(
        failing
            .as_ref()
            .is_some_and(|(s, r, _)| s == "False" && r == "Restored"),
        "RestoreFailing {failing:?}"
    );

    // 6. Another restore asked of the volume that now holds the data is refused.
    let patch =
        serde_json::json!({"spec": {"influxdb": {"restoreFrom": {"backup": success.name}}}});
    stack
        .monitors
        .patch(
            "lab",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    let refused = wait_for(
        "the second restore to be refused",
        default_timeout() * 2,
        || async {
            let m: IotMonitor = stack.monitors.get("lab").await.map_err(|e| e.to_string())?;
            match condition(&m, "RestoreFailing") {
                Some((s, r, message)) if s == "True" => Ok((r, message)),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    ensure!(refused.0 == "VolumeHasData", "{refused:?}");
    ensure!(refused.1.contains("nothing overwritten"), "{refused:?}");
    influx.wait_counts("before", n).await?;
    stack.stop().await
}

/// A scheduled backup lands in a real S3 bucket (SeaweedFS on this machine, reached by the
/// backup pod through its NetworkPolicy); the Secret of the keys must opt in first; a wrong
/// secret key then fails the next run with `BackupFailing` saying what to fix.
#[tokio::test]
async fn backups_go_to_a_real_s3_bucket_and_a_wrong_key_says_what_to_fix() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let node = RealNode::get(&cluster).await?;
    let s3 = iot_testkit::s3::S3Server::start_for_pods(&node).await;
    let influxdb = real_node::influxdb_spec(&format!(
        "backup: {{schedule: '* * * * *', keep: 2, destination: {{s3: {{endpoint: '{}', bucket: {}, prefix: lab, credentialsSecret: s3-keys}}}}}}",
        s3.endpoint_for_pods(),
        s3.bucket
    ))?;
    let yaml = format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: lab}}\nspec:\n  \
         influxdb: {influxdb}\n  simulator: {{enabled: false}}\n  aqi: {{enabled: false}}\n  \
         autoscaling: {{enabled: false}}\n"
    );
    let stack = Stack::start("backup-s3", &yaml).await?;
    let backup_failing = |reason: &'static str| {
        let monitors = stack.monitors.clone();
        async move {
            wait_for(
                &format!("BackupFailing {reason}"),
                Duration::from_secs(240),
                || async {
                    let m = monitors.get("lab").await.map_err(|e| e.to_string())?;
                    match condition(&m, "BackupFailing") {
                        Some((_, r, message)) if r == reason => Ok(message),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await
        }
    };

    // No Secret, then one that does not opt in: no backup pod, and the condition says what to do.
    let missing = backup_failing("MissingCredentials").await?;
    ensure!(missing.contains("s3-keys"), "{missing}");
    let secret = |secret_key: &str, labelled: bool| {
        let labels = if labelled {
            "\n  labels: {iot.operator.dev/allow-backup: \"true\"}"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s3-keys{labels}\nstringData: {{accessKeyId: {}, secretAccessKey: {secret_key}}}\n",
            s3.access_key
        )
    };
    cluster
        .apply_yaml(Some(stack.ns.name()), &secret(&s3.secret_key, false))
        .await?;
    let not_allowed = backup_failing("CredentialsNotAllowed").await?;
    ensure!(
        not_allowed.contains("iot.operator.dev/allow-backup=true"),
        "{not_allowed}"
    );
    cluster
        .apply_yaml(Some(stack.ns.name()), &secret(&s3.secret_key, true))
        .await?;
    backup_failing("BackupSucceeded").await?;
    let monitor = stack.monitors.get("lab").await?;
    let success = monitor
        .status
        .and_then(|s| s.backup)
        .and_then(|b| b.last_success)
        .context("lastSuccess")?;
    let keys: Vec<String> = s3.list("lab").await.into_iter().map(|o| o.key).collect();
    ensure!(
        keys.contains(&format!("lab/{}", success.name)),
        "{} not in the bucket: {keys:?}",
        success.name
    );

    // A wrong secret key: the next run fails, and says where to look.
    cluster
        .apply_yaml(Some(stack.ns.name()), &secret("not-the-secret-key", true))
        .await?;
    let failed = backup_failing("BackupFailed").await?;
    ensure!(
        failed.contains("check the access key and secret key in Secret s3-keys"),
        "{failed}"
    );
    stack.stop().await
}
