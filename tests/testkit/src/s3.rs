//! A real S3-compatible server for tests: SeaweedFS's `weed server` (master, volume server, filer
//! and S3 gateway in one process), built once by `tests/cluster/build.sh seaweedfs` and cached
//! with the control plane's binaries. Not a mock: the tests' uploads are signed, checked, stored
//! and listed by the server the way any S3 does it.
//!
//! Each [`S3Server`] has its data in a temporary directory, its own free ports, one bucket and one
//! access key / secret key (random per server), and is killed by PID when dropped. Buckets are not
//! created on upload: a wrong bucket name fails as it does on a real S3.
//!
//! ```no_run
//! # async fn demo(node: &iot_testkit::real_node::RealNode) {
//! use iot_testkit::s3::S3Server;
//! // Reachable by the real node's pods (and by the test, on the same address):
//! let s3 = S3Server::start_for_pods(node).await;
//! let endpoint = s3.endpoint_for_pods(); // http://198.19.<slot>.254:<port>
//! // ... a pod writes s3.bucket with s3.access_key / s3.secret_key ...
//! let objects = s3.list("").await; // what is in the bucket now
//! # }
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::cluster::{bin_dir, repo_dir};
use crate::ports::free_port;
use crate::process::Process;
use crate::real_node::RealNode;
use crate::wait::{self, default_timeout};

/// The region the server is told nothing about and clients sign with (SeaweedFS accepts any).
pub const REGION: &str = "us-east-1";

/// One object of the bucket, as [`S3Server::list`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Object {
    /// The key, without a leading `/`.
    pub key: String,
    pub size: u64,
}

/// A running SeaweedFS with one bucket and one key pair. See the module docs.
pub struct S3Server {
    /// Taken and dropped (killed) first by `Drop`, before the data directory and sockets go.
    process: Option<Process>,
    /// gRPC ports of master, volume server, filer and S3 gateway, which name the Unix sockets
    /// `weed server` makes in /tmp whatever its options say.
    grpc_ports: [(&'static str, u16); 4],
    address: IpAddr,
    port: u16,
    /// `http://ADDRESS:PORT` of the S3 API.
    pub endpoint_for_host: String,
    /// The bucket that exists (the only one).
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// The master's address as `weed shell` takes it: `host:port.grpcPort`.
    master: String,
    _data: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on 127.0.0.1, for tests on this machine only: pods cannot reach it
    /// ([`S3Server::endpoint_for_pods`] panics). Panics with the server's log when it cannot start.
    pub async fn start() -> S3Server {
        Self::start_on(Ipv4Addr::LOCALHOST.into()).await
    }

    /// Starts a server on this machine's address on the real node's link
    /// ([`RealNode::host_address`]), which the node's pods reach, and nothing beyond this machine.
    pub async fn start_for_pods(node: &RealNode) -> S3Server {
        Self::start_on(node.host_address().into()).await
    }

    /// Starts a server bound to `address` only (a loopback or real-node link address).
    pub async fn start_on(address: IpAddr) -> S3Server {
        let weed = weed_binary();
        let bucket = format!("iot-tests-{}", random_hex(4));
        for _attempt in 0..5 {
            let mut server = Self::spawn(&weed, address, bucket.clone());
            match server.wait_ready().await {
                Ok(()) => return server,
                // A free port was taken between the probe and the bind (see crate::ports).
                Err(log) if log.contains("address already in use") => continue,
                Err(log) => panic!("SeaweedFS did not start on {address}:\n{log}"),
            }
        }
        panic!("SeaweedFS found its ports taken five times");
    }

    fn spawn(weed: &std::path::Path, address: IpAddr, bucket: String) -> S3Server {
        let data = tempfile::Builder::new()
            .prefix("iot-s3-")
            .tempdir()
            .expect("temp dir for SeaweedFS");
        let access_key = format!("IOT{}", random_hex(8).to_uppercase());
        let secret_key = random_hex(20);
        let config = data.path().join("s3.json");
        std::fs::write(&config, identities_json(&access_key, &secret_key)).expect("write s3.json");
        let ports = distinct_free_ports(8);
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
        ] = ports[..]
        else {
            unreachable!("distinct_free_ports(8) returns eight ports")
        };
        let d = data.path();
        let mut command = Command::new(weed);
        // Logs to the process log only (glog also writes files to the temp dir by default).
        command.args(["-logtostderr=true", "server"]).args([
            format!("-dir={}", d.display()),
            format!("-ip={address}"),
            format!("-ip.bind={address}"),
            format!("-master.port={master}"),
            format!("-master.port.grpc={master_grpc}"),
            // No usage reports: nothing a test starts talks to anything beyond this machine.
            "-master.telemetry=false".into(),
            // Small volumes, so a test's few objects do not reserve gigabytes of sparse files.
            "-master.volumeSizeLimitMB=64".into(),
            format!("-volume.port={volume}"),
            format!("-volume.port.grpc={volume_grpc}"),
            "-volume.max=16".into(),
            "-filer".into(),
            format!("-filer.port={filer}"),
            format!("-filer.port.grpc={filer_grpc}"),
            format!("-filer.localSocket={}", d.join("filer.sock").display()),
            "-s3".into(),
            format!("-s3.port={s3}"),
            format!("-s3.port.grpc={s3_grpc}"),
            format!("-s3.localSocket={}", d.join("s3.sock").display()),
            format!("-s3.config={}", config.display()),
            // As on AWS: an upload to a bucket that does not exist fails.
            "-s3.autoCreateBucket=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
        ]);
        let process = Process::spawn("seaweedfs", &mut command);
        let host = match address {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        S3Server {
            process: Some(process),
            grpc_ports: [
                ("master", master_grpc),
                ("volume", volume_grpc),
                ("filer", filer_grpc),
                ("s3", s3_grpc),
            ],
            address,
            port: s3,
            endpoint_for_host: format!("http://{host}:{s3}"),
            bucket,
            access_key,
            secret_key,
            master: format!("{host}:{master}.{master_grpc}"),
            _data: data,
        }
    }

    /// Waits until the S3 API answers, creates the bucket, and waits until the key pair can list
    /// it. `Err` holds the log when the process exited first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client");
        let url = format!("{}/", self.endpoint_for_host);
        let (process, http) = (self.process_mut(), &http);
        let answered = wait::until("SeaweedFS's S3 API to answer", default_timeout(), || {
            let exited = process.exit_status();
            let url = url.clone();
            async move {
                if let Some(status) = exited {
                    return Ok(Some(status));
                }
                match http.get(url).send().await {
                    Ok(_) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        match answered {
            Ok(None) => {}
            Ok(Some(status)) => return Err(format!("exited ({status}):\n{}", self.log())),
            Err(e) => return Err(format!("{e}\n{}", self.log())),
        }
        self.create_bucket().await?;
        let store = self.store();
        wait::until(
            &format!("bucket {} to be listable", self.bucket),
            default_timeout(),
            || {
                let store = store.clone();
                async move {
                    let listed: Result<Vec<_>, _> = store.list(None).try_collect().await;
                    listed.map(drop).map_err(|e| e.to_string())
                }
            },
        )
        .await
        .map_err(|e| format!("{e}\n{}", self.log()))
    }

    /// `s3.bucket.create` in `weed shell`, retried while the filer is still starting.
    async fn create_bucket(&mut self) -> Result<(), String> {
        let weed = weed_binary();
        let master = self.master.clone();
        let bucket = self.bucket.clone();
        let process = self.process_mut();
        let created = wait::until_every(
            &format!("weed shell to create bucket {bucket}"),
            default_timeout(),
            Duration::from_millis(500),
            || {
                let exited = process.exit_status();
                let (weed, master, bucket) = (&weed, &master, &bucket);
                async move {
                    if let Some(status) = exited {
                        return Ok(Err(format!("SeaweedFS exited ({status})")));
                    }
                    let (ok, out) =
                        shell(weed, master, &format!("s3.bucket.create -name {bucket}"))
                            .await
                            .map_err(|e| e.to_string())?;
                    // "already exists": an earlier try that timed out had created it.
                    if ok || out.contains("already exists") {
                        Ok(Ok(()))
                    } else {
                        Err(out)
                    }
                }
            },
        )
        .await;
        match created {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(format!("{why}:\n{}", self.log())),
            Err(e) => Err(format!("{e}\n{}", self.log())),
        }
    }

    /// Where the real node's pods reach the S3 API. Panics for a server started with
    /// [`S3Server::start`] (loopback only).
    pub fn endpoint_for_pods(&self) -> &str {
        assert!(
            !self.address.is_loopback(),
            "this S3 server listens on loopback only; start it with S3Server::start_for_pods"
        );
        &self.endpoint_for_host
    }

    /// The S3 API's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn process(&self) -> &Process {
        self.process
            .as_ref()
            .expect("the server runs until dropped")
    }

    fn process_mut(&mut self) -> &mut Process {
        self.process
            .as_mut()
            .expect("the server runs until dropped")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process().pid()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.process().log()
    }

    /// An S3 client of the bucket with the server's key pair (path-style requests, plain HTTP).
    pub fn store(&self) -> AmazonS3 {
        self.store_with(&self.bucket, &self.access_key, &self.secret_key)
    }

    /// An S3 client with other credentials or another bucket, to see what the server refuses.
    pub fn store_with(&self, bucket: &str, access_key: &str, secret_key: &str) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint_for_host)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(REGION)
            .with_bucket_name(bucket)
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key)
            .build()
            .expect("an S3 client of the test server")
    }

    /// The objects whose keys start with the directory `prefix` ("" for all), sorted by key.
    pub async fn list(&self, prefix: &str) -> Vec<S3Object> {
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let mut objects: Vec<S3Object> = self
            .store()
            .list(prefix.as_ref())
            .map_ok(|meta| S3Object {
                key: meta.location.to_string(),
                size: meta.size,
            })
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("list bucket {}: {e}", self.bucket));
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        objects
    }

    /// The bytes of one object.
    pub async fn get(&self, key: &str) -> Vec<u8> {
        let path = ObjectPath::from(key);
        let got = self.store().get(&path).await;
        let bytes = match got {
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        bytes
            .unwrap_or_else(|e| panic!("get {key} from bucket {}: {e}", self.bucket))
            .to_vec()
    }

    /// A URL that lets anyone `method` the object `key` for ten minutes without the key pair
    /// (SigV4 in the query string): for a pod that has `wget` and no S3 client.
    pub async fn presigned_url(&self, method: reqwest::Method, key: &str) -> String {
        self.store()
            .signed_url(method, &ObjectPath::from(key), Duration::from_secs(600))
            .await
            .unwrap_or_else(|e| panic!("presign {key}: {e}"))
            .to_string()
    }

    /// Stores one object.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.store()
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .unwrap_or_else(|e| panic!("put {key} into bucket {}: {e}", self.bucket));
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // SIGKILL (a SIGTERM takes SeaweedFS half a minute), then what it leaves behind.
        drop(self.process.take());
        for (service, port) in self.grpc_ports {
            let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{service}-grpc-{port}.sock"));
        }
    }
}

/// Runs one `weed shell` command against `master`: whether it succeeded, and what it printed.
async fn shell(
    weed: &std::path::Path,
    master: &str,
    command: &str,
) -> std::io::Result<(bool, String)> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(weed)
        .args(["shell", &format!("-master={master}"), "-connectTimeout=5s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(format!("{command}\n").as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| std::io::Error::other("weed shell did not finish within 30 s"))??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// The one identity the server knows; requests without its signature are refused.
fn identities_json(access_key: &str, secret_key: &str) -> String {
    serde_json::json!({
        "identities": [{
            "name": "iot-tests",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]
    })
    .to_string()
}

/// `weed`, built by `tests/cluster/build.sh seaweedfs` the first time a test needs it (once per
/// test process; the script is a quick no-op when the cached binary is the pinned version).
fn weed_binary() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            if let Some(weed) = std::env::var_os("IOT_WEED") {
                return PathBuf::from(weed);
            }
            // The script's progress goes to this test's stderr: a first build takes minutes.
            let status = Command::new("bash")
                .arg(repo_dir().join("tests/cluster/build.sh"))
                .arg("seaweedfs")
                .stdin(Stdio::null())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()
                .expect("run tests/cluster/build.sh seaweedfs");
            assert!(
                status.success(),
                "tests/cluster/build.sh seaweedfs failed ({status}); it needs go (make deps)"
            );
            bin_dir().join("weed")
        })
        .clone()
}

fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    while ports.len() < n {
        ports.insert(free_port());
    }
    ports.into_iter().collect()
}

/// `bytes` random bytes as hex, from the kernel.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
