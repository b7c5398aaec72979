//! Running an unpacked image with runc, without any cluster: as the image's user, with a
//! read-only root file system and no capabilities, as the restricted Pod Security Standard asks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;
use crate::oci::Bundle;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A container to be run from a bundle. Its runc state lives in a directory of its own, so the
/// machine's runc state is never touched; the container is deleted when dropped.
pub struct Container {
    id: String,
    state: tempfile::TempDir,
    bundle: PathBuf,
    spec: Value,
    child: Option<Child>,
}

/// What a finished container left.
#[derive(Debug)]
pub struct Exit {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Container {
    /// Prepares the bundle's config.json: read-only root, no terminal, no capabilities, the
    /// image's own user and entry point (replaced by `args` when given).
    pub fn new(bundle: &Bundle, args: Option<&[&str]>) -> Result<Self, Error> {
        let path = bundle.path.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut spec: Value =
            serde_json::from_str(&text).map_err(|e| Error::Invalid(e.to_string()))?;
        spec["process"]["terminal"] = json!(false);
        spec["root"]["readonly"] = json!(true);
        spec["process"]["noNewPrivileges"] = json!(true);
        spec["process"]["capabilities"] = json!({
            "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": []
        });
        if let Some(args) = args {
            spec["process"]["args"] = json!(args);
        }
        let state = tempfile::tempdir().map_err(|e| Error::io(&path, e))?;
        let id = format!(
            "iot-images-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Ok(Container {
            id,
            state,
            bundle: bundle.path.clone(),
            spec,
            child: None,
        })
    }

    pub fn env(mut self, kv: &str) -> Self {
        if let Some(env) = self.spec["process"]["env"].as_array_mut() {
            env.push(json!(kv));
        }
        self
    }

    /// Shares the host's network namespace (to reach servers the test runs on 127.0.0.1).
    pub fn host_network(mut self) -> Self {
        if let Some(ns) = self.spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
        self
    }

    /// Mounts a host file or directory read-only, as the kubelet mounts resolv.conf or a ConfigMap.
    pub fn bind_ro(mut self, host: &Path, inside: &str) -> Self {
        self.push_mount(json!({
            "destination": inside, "type": "bind", "source": host,
            "options": ["rbind", "ro", "nosuid", "nodev"]
        }));
        self
    }

    /// A writable tmpfs, as an emptyDir.
    pub fn tmpfs(mut self, inside: &str) -> Self {
        self.push_mount(json!({
            "destination": inside, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=1777", "size=256m"]
        }));
        self
    }

    fn push_mount(&mut self, m: Value) {
        if let Some(mounts) = self.spec["mounts"].as_array_mut() {
            mounts.push(m);
        }
    }

    fn runc(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(self.state.path());
        c
    }

    /// Starts the container in the foreground of a runc child process.
    pub fn start(&mut self) -> Result<(), Error> {
        let path = self.bundle.join("config.json");
        std::fs::write(&path, self.spec.to_string()).map_err(|e| Error::io(&path, e))?;
        // Files, not pipes: a chatty server must never block on a full pipe.
        let file = |name: &str| {
            let p = self.state.path().join(name);
            std::fs::File::create(&p).map_err(|e| Error::io(&p, e))
        };
        let child = self
            .runc()
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(file("stdout")?)
            .stderr(file("stderr")?)
            .spawn()
            .map_err(|e| Error::io(Path::new("runc"), e))?;
        self.child = Some(child);
        Ok(())
    }

    /// What the container printed so far.
    pub fn output(&self) -> (String, String) {
        let read = |n: &str| std::fs::read_to_string(self.state.path().join(n)).unwrap_or_default();
        (read("stdout"), read("stderr"))
    }

    /// runc's view of the container: "running", "stopped", ...
    pub fn status(&self) -> String {
        let out = self.runc().arg("state").arg(&self.id).output();
        out.ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Sends a signal to the container's first process.
    pub fn kill(&self, signal: &str) -> Result<(), Error> {
        crate::run(self.runc().arg("kill").arg(&self.id).arg(signal)).map(|_| ())
    }

    /// Runs a command inside the running container (as its user), as an exec probe does; its
    /// exit code.
    pub fn exec(&self, args: &[&str]) -> Result<Option<i32>, Error> {
        let status = self
            .runc()
            .arg("exec")
            .arg(&self.id)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| Error::io(Path::new("runc"), e))?;
        Ok(status.code())
    }

    /// Waits for the container to exit, at most `timeout`; then it is killed and that is an error.
    pub fn wait(&mut self, timeout: Duration) -> Result<Exit, Error> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| Error::Invalid("container not started".into()))?;
        let until = Instant::now() + timeout;
        loop {
            if child
                .try_wait()
                .map_err(|e| Error::io(Path::new("runc"), e))?
                .is_some()
            {
                break;
            }
            if Instant::now() > until {
                let _ = self.kill("KILL");
                let _ = child.wait();
                let (_, stderr) = self.output();
                return Err(Error::Timeout(format!(
                    "{} still running after {timeout:?}; stderr: {stderr}",
                    self.id
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = child.wait().map_err(|e| Error::io(Path::new("runc"), e))?;
        let (stdout, stderr) = self.output();
        Ok(Exit {
            code: status.code(),
            stdout,
            stderr,
        })
    }

    /// Starts, waits, and returns what it printed.
    pub fn run(mut self, timeout: Duration) -> Result<Exit, Error> {
        self.start()?;
        self.wait(timeout)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.kill("KILL");
            let _ = child.wait();
        }
        let _ = self
            .runc()
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}
