//! A throw-away InfluxDB 1.x (Debian's `influxd`) on free loopback ports, with its data in a
//! temporary directory. Stopped when dropped. `stop` and `start_again` keep the data and the port,
//! for outage tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ports::free_port;

pub struct InfluxServer {
    dir: tempfile::TempDir,
    http_port: u16,
    /// The RPC port (`influxd backup` and `restore`), new at every start.
    rpc_port: u16,
    child: Option<Child>,
    auth: Option<(String, String)>,
    /// InfluxDB settings as environment variables (`INFLUXDB_DATA_MAX_VALUES_PER_TAG`, ...),
    /// which override its configuration file.
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

fn influxd() -> PathBuf {
    let p = std::env::var_os("INFLUXD")
        .map_or_else(|| PathBuf::from("/usr/bin/influxd"), PathBuf::from);
    assert!(
        p.exists(),
        "influxd not found at {} — run `make deps` (installs Debian's influxdb package) or set INFLUXD",
        p.display()
    );
    p
}

impl InfluxServer {
    /// Starts InfluxDB without authentication.
    pub async fn start() -> Self {
        Self::launch(None, &[]).await
    }

    /// Starts InfluxDB without authentication, with settings given as environment variables,
    /// e.g. `("INFLUXDB_DATA_MAX_VALUES_PER_TAG", "50")`.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::launch(None, env).await
    }

    /// Starts InfluxDB with HTTP authentication on and an admin user `user` / `password`.
    pub async fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_string(), password.to_string())), &[]).await
    }

    async fn launch(auth: Option<(String, String)>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("iot-influx-")
            .tempdir()
            .expect("temp dir");
        let mut server = InfluxServer {
            dir,
            http_port: 0,
            rpc_port: 0,
            child: None,
            auth,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            http: reqwest::Client::new(),
        };
        server.start_fresh_ports().await;
        if let Some((user, password)) = server.auth.clone() {
            // With auth on and no user yet, InfluxDB accepts exactly this statement unauthenticated.
            let q =
                format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES");
            let resp = server
                .http
                .post(format!("{}/query", server.url()))
                .query(&[("q", q.as_str())])
                .send()
                .await
                .expect("create admin user");
            assert!(
                resp.status().is_success(),
                "create admin user: {}",
                resp.status()
            );
        }
        server
    }

    fn write_config(&mut self) {
        self.rpc_port = free_port();
        let d = self.dir.path();
        let conf = include_str!("../influxdb.conf")
            .replace("@DIR@", &d.display().to_string())
            .replace("@RPC_PORT@", &self.rpc_port.to_string())
            .replace("@HTTP_PORT@", &self.http_port.to_string())
            .replace("@AUTH@", &self.auth.is_some().to_string());
        std::fs::write(d.join("influxdb.conf"), conf).expect("write influxdb.conf");
    }

    /// First start: free ports can be taken by someone else between our probe and influxd's
    /// bind (outgoing connections use the same port range), so a bind conflict picks new ports.
    async fn start_fresh_ports(&mut self) {
        for attempt in 1.. {
            self.http_port = free_port();
            self.write_config();
            match self.try_start().await {
                Ok(()) => return,
                Err(log) if attempt < 5 && log.contains("address already in use") => continue,
                Err(log) => panic!("influxd did not start:\n{log}"),
            }
        }
    }

    /// Starts again on the same HTTP port and data (after `stop`); waits until `/ping` answers.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "InfluxDB is already running");
        for attempt in 1.. {
            // A new cluster RPC port each time; the HTTP port must stay what clients know.
            self.write_config();
            match self.try_start().await {
                Ok(()) => return,
                Err(log) if attempt < 10 && log.contains("address already in use") => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(log) => panic!("influxd did not start again:\n{log}"),
            }
        }
    }

    async fn try_start(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.log_path()).expect("influxd log file");
        let child = Command::new(influxd())
            .arg("-config")
            .arg(self.dir.path().join("influxdb.conf"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn influxd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.http.get(format!("{}/ping", self.url())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("influxd exited ({status}):\n{}", self.log_tail()));
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "influxd did not answer /ping within 60 s:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its connections but answers nothing, as a hung
    /// InfluxDB does. [`InfluxServer::resume`] lets it go on.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("InfluxDB is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Kills the server (SIGKILL: an outage, not a clean shutdown); data and port are kept.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The RPC port `influxd backup -host` and `influxd restore -host` speak to (loopback).
    pub fn rpc_port(&self) -> u16 {
        self.rpc_port
    }

    pub fn port(&self) -> u16 {
        self.http_port
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Writes line protocol (nanosecond timestamps) into `db`'s default retention policy.
    pub async fn write(&self, db: &str, lines: &str) {
        self.write_to(db, "", lines).await;
    }

    /// Writes line protocol into retention policy `rp` of `db` (`""`: the default one).
    pub async fn write_to(&self, db: &str, rp: &str, lines: &str) {
        let mut req = self
            .http
            .post(format!("{}/write", self.url()))
            .query(&[("db", db), ("rp", rp)])
            .body(lines.to_owned());
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.expect("write to InfluxDB");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "write failed: {status} {text}");
    }

    /// Runs InfluxQL (POST, so it may change state) and returns the parsed JSON answer.
    pub async fn query(&self, db: &str, q: &str) -> Value {
        let mut req = self.http.post(format!("{}/query", self.url())).query(&[
            ("db", db),
            ("q", q),
            ("epoch", "ns"),
        ]);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.expect("query InfluxDB");
        let status = resp.status();
        let text = resp.text().await.expect("read InfluxDB answer");
        let body: Value = serde_json::from_str(&text).expect("InfluxDB answer is JSON");
        assert!(status.is_success(), "query {q:?} failed: {status} {body}");
        if let Some(e) = body.pointer("/results/0/error") {
            panic!("query {q:?} failed: {e}");
        }
        body
    }

    /// The rows of the first series of the first statement (empty when there is none).
    pub async fn rows(&self, db: &str, q: &str) -> Vec<Vec<Value>> {
        let body = self.query(db, q).await;
        body.pointer("/results/0/series")
            .and_then(Value::as_array)
            .map(|series| {
                series
                    .iter()
                    .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
                    .filter_map(|row| row.as_array().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of points of `measurement` (all series), counted on `field`.
    pub async fn count(&self, db: &str, measurement: &str, field: &str) -> u64 {
        let q = format!("SELECT count(\"{field}\") FROM \"{measurement}\"");
        self.rows(db, &q)
            .await
            .first()
            .and_then(|r| r.get(1))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }
}

impl Drop for InfluxServer {
    fn drop(&mut self) {
        self.stop();
    }
}
