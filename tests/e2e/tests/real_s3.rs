//! The tests' S3 server (`iot_testkit::s3`, SeaweedFS) serves the real node's pods: a pod reads
//! an object the test stored, through a presigned URL, and an unsigned request from the same pod
//! is refused. What the backup tests rely on: a pod's S3 client reaches the server, and the server
//! checks signatures.

use anyhow::{Result, ensure};
use iot_testkit::cluster::Cluster;
use iot_testkit::real_node::{self, BUSYBOX_IMAGE, RealNode};
use iot_testkit::s3::S3Server;

#[tokio::test]
async fn a_pod_on_the_real_node_reads_from_the_tests_s3_server() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let node = RealNode::get(&cluster).await?;
    let s3 = S3Server::start_for_pods(&node).await;
    let payload = "stored by the test on the host";
    s3.put("probe/object", payload.as_bytes().to_vec()).await;
    let signed = s3.presigned_url(reqwest::Method::GET, "probe/object").await;
    ensure!(
        signed.starts_with(s3.endpoint_for_pods()),
        "the presigned URL points at {signed}, not at {}",
        s3.endpoint_for_pods()
    );
    let unsigned = format!("{}/{}/probe/object", s3.endpoint_for_pods(), s3.bucket);

    let ns = cluster.namespace("real-s3").await?;
    // busybox's wget prints the body, or "server returned error: HTTP/1.1 403 ..." and fails.
    let script = format!(
        "wget -q -O - '{signed}'; echo; echo signed-done; \
         wget -q -O - '{unsigned}' 2>&1 || echo unsigned-refused; echo unsigned-done; exec sleep 600"
    );
    cluster
        .apply_yaml(
            Some(ns.name()),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: reader}}\nspec:\n{}  \
                 terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
                 image: {BUSYBOX_IMAGE}\n    imagePullPolicy: Never\n    command: [sh, -c, {script:?}]\n",
                real_node::scheduling_yaml(2)
            ),
        )
        .await?;
    real_node::wait_running(&cluster, ns.name(), "reader").await?;
    let log = real_node::wait_log_contains(&cluster, ns.name(), "reader", "unsigned-done").await?;
    ensure!(
        log.contains(&format!("{payload}\nsigned-done")),
        "the pod did not read the object: {log:?}"
    );
    ensure!(
        log.contains("403")
            && log.contains("unsigned-refused")
            && !log.contains(&format!("{payload}\nunsigned")),
        "an unsigned request was not refused: {log:?}"
    );
    Ok(())
}
