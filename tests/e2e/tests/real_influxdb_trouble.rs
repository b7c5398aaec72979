//! An InfluxDB that cannot start says why in the IotMonitor, not only in a pod nobody looks at:
//! a real container on the real node that fails at every start (an image without `influxd`), and
//! the operator's status carries the kubelet's reason and the container's last words in the
//! `INFLUXDB` column's summary and the Ready condition. Needs the real node (`make test`).

use iot_e2e::operator_support::{Stack, condition};

use anyhow::Result;
use iot_testkit::cluster::{Cluster, wait_for};
use iot_testkit::real_node::{self, BUSYBOX_IMAGE, RealNode};
use std::time::Duration;

#[tokio::test]
async fn a_crash_looping_influxdb_says_why_in_the_monitors_status() -> Result<()> {
    RealNode::get(&Cluster::connect().await?).await?;
    // busybox has no `influxd`: the runtime refuses to start the container, every time.
    let yaml = format!(
        "apiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata: {{name: lab}}\nspec:\n  \
         influxdb: {{image: {BUSYBOX_IMAGE}, storage: {{size: 16Mi}}, {}}}\n  simulator: \
         {{enabled: false}}\n  aqi: {{enabled: false}}\n  autoscaling: {{enabled: false}}\n",
        real_node::component_scheduling()
    );
    let stack = Stack::start("influxdb-trouble", &yaml).await?;
    // Start-up grace (20 s), the not-Ready re-check (30 s) and the kubelet's first back-offs.
    let summary = wait_for(
        "the InfluxDB summary to say why it does not start",
        Duration::from_secs(240),
        || async {
            let monitor = stack.monitors.get("lab").await.map_err(|e| e.to_string())?;
            let summary = monitor
                .status
                .as_ref()
                .and_then(|s| s.components.influxdb.as_ref())
                .map(|c| c.summary.clone())
                .unwrap_or_default();
            let ready = condition(&monitor, "Ready");
            match &ready {
                Some((status, _, message))
                    if status == "False"
                        && summary.starts_with("0/1 ")
                        && summary.contains("influxd")
                        && message.contains(&summary) =>
                {
                    Ok(summary)
                }
                _ => Err(format!("summary {summary:?}, Ready {ready:?}")),
            }
        },
    )
    .await?;
    // The kubelet's reason for a container that cannot start, then its back-off.
    anyhow::ensure!(
        ["CrashLoopBackOff", "StartError", "RunContainerError"]
            .iter()
            .any(|reason| summary.contains(reason)),
        "no kubelet reason in {summary:?}"
    );
    stack.stop().await
}
