//! The workspace's binaries as child processes of a test.
//!
//! [`Process`]: stdout and stderr go to a log file, which is printed when the test fails;
//! killed when dropped. [`Service`]: a process with an HTTP side port (`/healthz`, `/readyz`,
//! `/metrics`), started on free ports and waited on until it answers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::ports::free_tcp_addr;
use crate::wait::{self, TimedOut, default_timeout};

/// A child process whose output goes to a log file.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// Holds the log file; removed with the process handle.
    _dir: tempfile::TempDir,
}

impl Process {
    /// Spawns `command` with stdin closed and stdout and stderr appended to one log file.
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        let dir = tempfile::Builder::new()
            .prefix(&format!("iot-{name}-"))
            .tempdir()
            .expect("temp dir for the log");
        let log = dir.path().join("output.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (what Kubernetes sends before it kills a pod).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, TimedOut> {
        let what = format!("{} to exit", self.name);
        wait::until(&what, timeout, || {
            let status = self.exit_status();
            async move { status.ok_or_else(|| "still running".to_string()) }
        })
        .await
    }

    /// SIGTERM, then the exit status (a graceful stop within the default timeout).
    pub async fn stop(&mut self) -> ExitStatus {
        self.terminate();
        match self.wait_exit(default_timeout()).await {
            Ok(status) => status,
            Err(e) => panic!("{e}\n{}", self.log()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("---- last lines of {} ----\n{tail}", self.name);
        }
    }
}

/// A process with an HTTP side port.
pub struct Service {
    pub process: Process,
    /// The side port's address.
    pub http: SocketAddr,
    client: reqwest::Client,
}

impl Service {
    /// Starts the command `command(http)` builds, with its side port at `http` (a free loopback
    /// port), and waits until `GET ready_path` answers 200 (`/healthz`: it runs; `/readyz`: it
    /// can work). A process that exits first because a port was taken between the probe and
    /// its bind (see [`crate::ports`]) is started again on new ports; any other early exit
    /// fails the test with the process's log.
    pub async fn start(
        name: &str,
        ready_path: &str,
        mut command: impl FnMut(SocketAddr) -> Command,
    ) -> Service {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        for _attempt in 0..5 {
            let http = free_tcp_addr();
            let mut service = Service {
                process: Process::spawn(name, &mut command(http)),
                http,
                client: client.clone(),
            };
            let what = format!("{name} to answer {ready_path} with 200");
            let (process, client) = (&mut service.process, &service.client);
            let started = wait::until(&what, default_timeout(), || {
                let exited = process.exit_status();
                async move {
                    if let Some(status) = exited {
                        return Ok(Some(status));
                    }
                    match status_of(client, http, ready_path).await {
                        Some(200) => Ok(None),
                        other => Err(format!("{ready_path} answered {other:?}")),
                    }
                }
            })
            .await;
            match started {
                Ok(None) => return service,
                Ok(Some(_)) if service.process.log().contains("already in use") => continue,
                Ok(Some(status)) => {
                    panic!("{name} exited ({status}):\n{}", service.process.log())
                }
                Err(e) => panic!("{e}\n{}", service.process.log()),
            }
        }
        panic!("{name} found its ports taken five times");
    }

    /// The status code of `GET path`, or `None` when the side port does not answer.
    pub async fn status(&self, path: &str) -> Option<u16> {
        status_of(&self.client, self.http, path).await
    }

    /// Waits until `GET path` answers `want`.
    pub async fn wait_status(&self, path: &str, want: u16) -> Result<(), TimedOut> {
        let what = format!("{} to answer {path} with {want}", self.process.name);
        wait::until(&what, default_timeout(), || async move {
            match self.status(path).await {
                Some(got) if got == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// The `/metrics` text (empty when the side port does not answer).
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.http);
        match self.client.get(url).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of one sample of `/metrics`, named exactly as exposed (`name{labels}`).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        sample_value(&self.metrics().await, sample)
    }

    /// Waits until the sample `sample` is at least `at_least`, and returns its value then.
    pub async fn wait_metric(&self, sample: &str, at_least: f64) -> Result<f64, TimedOut> {
        let what = format!("{sample} of {} to reach {at_least}", self.process.name);
        wait::until(&what, default_timeout(), || async move {
            match self.metric(sample).await {
                Some(v) if v >= at_least => Ok(v),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }
}

async fn status_of(client: &reqwest::Client, addr: SocketAddr, path: &str) -> Option<u16> {
    let resp = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// The value of `sample` in OpenMetrics text.
pub fn sample_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_exact_name_and_labels() {
        let text = "# TYPE a counter\na_total 3\na_total{k=\"v\"} 4.5\nab_total 9\n";
        assert_eq!(sample_value(text, "a_total"), Some(3.0));
        assert_eq!(sample_value(text, "a_total{k=\"v\"}"), Some(4.5));
        assert_eq!(sample_value(text, "b_total"), None);
    }

    #[tokio::test]
    async fn a_process_logs_to_its_file_and_reports_its_exit() {
        let mut p = Process::spawn(
            "sh",
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        );
        let status = p.wait_exit(default_timeout()).await.expect("exits");
        assert_eq!(status.code(), Some(3));
        assert_eq!(p.log(), "out\nerr\n");
    }

    #[tokio::test]
    async fn stop_sends_sigterm() {
        let mut p = Process::spawn("sleep", Command::new("sleep").arg("600"));
        assert!(p.is_running());
        let status = p.stop().await;
        assert!(!status.success(), "killed by SIGTERM: {status}");
        assert!(!p.is_running());
    }
}
