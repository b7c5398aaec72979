//! The stack's InfluxDB as its admin, from this machine: the real node's host reaches the
//! Service's ClusterIP (kube-proxy), and network policies never block the node. The credentials
//! are the generated ones in `<monitor>-credentials`.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use iot_testkit::cluster::Cluster;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use serde_json::Value;

/// An InfluxDB of the monitor `lab`, queried as its admin.
pub struct StackInflux {
    url: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl StackInflux {
    /// The InfluxDB of monitor `lab` in `ns`; each request times out after `timeout`.
    pub async fn connect(cluster: &Cluster, ns: &str, timeout: Duration) -> Result<Self> {
        let ip = Api::<Service>::namespaced(cluster.client(), ns)
            .get("lab-influxdb")
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .context("InfluxDB's Service has no ClusterIP")?;
        let data = Api::<Secret>::namespaced(cluster.client(), ns)
            .get("lab-credentials")
            .await?
            .data
            .unwrap_or_default();
        let key = |k: &str| -> Result<String> {
            let value = data
                .get(k)
                .with_context(|| format!("no {k} in the Secret"))?;
            Ok(String::from_utf8(value.0.clone())?)
        };
        Ok(Self {
            url: format!("http://{ip}:8086"),
            user: key("influxdb-admin-username")?,
            password: key("influxdb-admin-password")?,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()?,
        })
    }

    /// One InfluxQL statement in `db` (POST, so it may change state too); an error when
    /// InfluxDB reports one.
    pub async fn query(&self, db: &str, q: &str) -> Result<Value> {
        let answer = self
            .http
            .post(format!("{}/query", self.url))
            .basic_auth(&self.user, Some(&self.password))
            .query(&[("db", db), ("q", q)])
            .send()
            .await?
            .error_for_status()?;
        let answer: Value = answer.json().await?;
        if let Some(error) = answer["results"][0]["error"].as_str() {
            bail!("{q}: {error}");
        }
        Ok(answer)
    }

    /// The first value of the first series `q` returns (a count): 0 when there is none.
    pub async fn first_number(&self, db: &str, q: &str) -> Result<u64> {
        let answer = self.query(db, q).await?;
        Ok(answer["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0))
    }

    /// Writes line protocol (nanosecond timestamps) to `db`.
    pub async fn write(&self, db: &str, body: String) -> Result<()> {
        let answer = self
            .http
            .post(format!("{}/write", self.url))
            .basic_auth(&self.user, Some(&self.password))
            .query(&[("db", db)])
            .body(body)
            .send()
            .await?;
        ensure!(answer.status().is_success(), "write: {}", answer.status());
        Ok(())
    }
}
