//! Load mode: as many readings as the server will take, bounded by a count and/or a duration,
//! at a target rate or as fast as a window of outstanding requests allows, or as a fleet of
//! devices each sending on its own schedule ([`Shape`]). Prints a progress
//! line every second and a summary with latency percentiles at the end. With `--json` the
//! progress lines are JSON objects ([`Progress`], shared with iot-loadtest), one per line on stderr, for programs that
//! follow a run (`iot-loadtest` reads them from the pod's log).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use iot_common::load_progress::{Percentiles, Progress};
use serde::Serialize;
use tokio::sync::watch;

use crate::client::{
    self, Credentials, Dtls, HandshakePolicy, KeySource, SourcePort, Transmission,
};
use crate::stats::Stats;

mod driver;
#[cfg(test)]
mod fleet_tests;

#[derive(Clone, Debug)]
pub struct LoadPlan {
    pub server: SocketAddr,
    pub shape: Shape,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    /// After the sending phase, how long outstanding readings may still take.
    pub drain: Duration,
    pub place: String,
    /// Progress lines as JSON instead of text.
    pub json: bool,
    /// Speak DTLS: socket j is the device `devices[j]`.
    pub devices: Option<Vec<Credentials>>,
}

/// How the readings are sent: from how many sockets, how many in flight on each, how they are
/// paced, which slot sends which, and from which source ports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub sockets: u32,
    /// Requests outstanding per socket.
    pub window: u32,
    /// Readings per second over all sockets; `None`: as fast as the window allows. Reading `i`
    /// is due `i / rate` seconds after the start.
    pub rate: Option<f64>,
    pub assignment: Assignment,
    pub ports: SourcePort,
}

/// Which slot sends reading `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// The first slot that is free: the window stays full, whoever is slow.
    FirstFree,
    /// Slot `j` of `n` sends readings `j`, `j + n`, `j + 2n`, ...: with a rate, every slot is a
    /// device with a schedule of its own, the devices spread evenly over one interval.
    OwnSchedule,
}

/// The window of a socket unless said otherwise: enough to keep a server busy from a few.
const DEFAULT_WINDOW: u32 = 32;

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ShapeError {
    #[error("--interval must be between 0.001 and 86400 seconds, not {0}")]
    Interval(f64),
    #[error(
        "--window {0} with --devices, --interval or --new-port-per-reading: a device sends one \
         reading at a time"
    )]
    Window(u32),
}

impl Shape {
    /// The shape the command line asks for. `devices` is `sockets` with a window of 1;
    /// `interval` gives each socket its own schedule (the total rate is sockets / interval).
    pub fn of(
        sockets: u32,
        devices: Option<u32>,
        window: Option<u32>,
        rate: Option<f64>,
        interval: Option<f64>,
        new_port_per_reading: bool,
    ) -> Result<Self, ShapeError> {
        let sockets = devices.unwrap_or(sockets);
        let one_at_a_time = devices.is_some() || interval.is_some() || new_port_per_reading;
        let window = match window {
            Some(w) if one_at_a_time && w != 1 => return Err(ShapeError::Window(w)),
            Some(w) => w,
            None if one_at_a_time => 1,
            None => DEFAULT_WINDOW,
        };
        let (rate, assignment) = match interval {
            Some(s) if !(0.001..=86_400.0).contains(&s) => return Err(ShapeError::Interval(s)),
            Some(s) => (Some(f64::from(sockets) / s), Assignment::OwnSchedule),
            None => (rate.filter(|r| *r > 0.0), Assignment::FirstFree),
        };
        let ports = match new_port_per_reading {
            true => SourcePort::PerExchange,
            false => SourcePort::Kept,
        };
        Ok(Shape {
            sockets,
            window,
            rate,
            assignment,
            ports,
        })
    }

    /// Slots over all sockets.
    fn slots(&self) -> u64 {
        u64::from(self.sockets) * u64::from(self.window)
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub readings: u64,
    pub acked: u64,
    pub failed: u64,
    pub requests_sent: u64,
    pub retransmissions: u64,
    pub unavailable: u64,
    pub timeouts: u64,
    pub handshakes: u64,
    pub handshakes_failed: u64,
    /// UDP sockets opened: one a socket, or one an exchange with --new-port-per-reading.
    pub source_ports: u64,
    pub elapsed_secs: f64,
    pub acked_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

impl Summary {
    pub fn print_human(&self) {
        println!(
            "readings {}  acked {}  failed {}  (requests {}  retransmissions {}  5.03 {}  timeouts {})",
            self.readings,
            self.acked,
            self.failed,
            self.requests_sent,
            self.retransmissions,
            self.unavailable,
            self.timeouts
        );
        if self.handshakes + self.handshakes_failed > 0 {
            println!(
                "DTLS handshakes {} done, {} failed",
                self.handshakes, self.handshakes_failed
            );
        }
        println!("source ports {}", self.source_ports);
        println!(
            "{:.0} acked readings/s over {:.2} s; ack latency p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.acked_per_sec,
            self.elapsed_secs,
            self.latency_ms_p50,
            self.latency_ms_p90,
            self.latency_ms_p99,
            self.latency_ms_max
        );
    }
}

pub async fn run(
    plan: LoadPlan,
    params: Transmission,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<Summary> {
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    // One pair of histograms for the whole run (about 100 KB each), shared by the sockets.
    let latency = Arc::new(Mutex::new(Latency::default()));
    let meter = Meter {
        stats: stats.clone(),
        issued: issued.clone(),
        latency: latency.clone(),
        started,
        json: plan.json,
    };
    let progress = tokio::spawn(progress(meter.clone()));
    let (server, shape, json) = (plan.server, plan.shape, plan.json);
    let devices = plan.devices.clone();
    let run = Arc::new(driver::Run {
        send_until: plan.duration.map(|d| started + d),
        plan,
        stats: stats.clone(),
        next: AtomicU64::new(0),
        issued: issued.clone(),
        latency: latency.clone(),
        started,
        stop,
    });
    let mut endpoints = Vec::new();
    for socket in 0..shape.sockets {
        let window = Box::new(driver::Window::new(run.clone(), socket));
        let dtls = devices
            .as_ref()
            .and_then(|d| d.get(socket as usize))
            .map(|c| Dtls {
                credentials: c.clone(),
                policy: HandshakePolicy::default(),
            });
        endpoints.push(tokio::spawn(client::drive(
            server,
            params,
            stats.clone(),
            window,
            dtls,
            shape.ports,
        )));
    }
    let mut result = Ok(());
    for e in endpoints {
        match e.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(std::io::Error::other(e)),
        }
    }
    progress.abort();
    result?;
    if json {
        // The last word of a followed run: counts and percentiles once every reading is settled.
        eprintln!("{}", meter.progress_line(None, true));
    }
    let latency = latency.lock().unwrap_or_else(|p| p.into_inner());
    let latency = &latency.total;
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let acked = stats.acked.get();
    Ok(Summary {
        readings: issued.load(Ordering::Relaxed),
        acked,
        failed: stats.failed.get(),
        requests_sent: stats.sent.get(),
        retransmissions: stats.retransmitted.get(),
        unavailable: stats.unavailable.get(),
        timeouts: stats.timeouts.get(),
        handshakes: stats.handshakes.get(),
        handshakes_failed: stats.handshake_failures.get(),
        source_ports: stats.source_ports.get(),
        elapsed_secs: elapsed,
        acked_per_sec: acked as f64 / elapsed.max(1e-9),
        latency_ms_p50: ms(0.50),
        latency_ms_p90: ms(0.90),
        latency_ms_p99: ms(0.99),
        latency_ms_max: latency.max() as f64 / 1000.0,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("cannot list the key files of {dir}: {source}")]
    List { dir: String, source: std::io::Error },
    #[error("{dir} holds {found} key files; --sockets {sockets} needs one a socket")]
    TooFew {
        dir: String,
        found: usize,
        sockets: u32,
    },
    #[error("device {identity}: {source}")]
    Key {
        identity: String,
        source: client::HandshakeError,
    },
}

/// The device of each socket over DTLS, or `None` to send in plain: the first `sockets` key
/// files of `keys_dir` in sorted order, or one `identity` and `key` for every socket. Every
/// key is checked now: a load run with a key that cannot work would only time out.
pub fn devices(
    keys_dir: Option<PathBuf>,
    identity: Option<String>,
    key: Option<String>,
    sockets: u32,
) -> Result<Option<Vec<Credentials>>, DevicesError> {
    let Some(devices) = listed(keys_dir, identity, key, sockets)? else {
        return Ok(None);
    };
    for device in &devices {
        device.check().map_err(|source| DevicesError::Key {
            identity: device.identity.clone(),
            source,
        })?;
    }
    Ok(Some(devices))
}

fn listed(
    keys_dir: Option<PathBuf>,
    identity: Option<String>,
    key: Option<String>,
    sockets: u32,
) -> Result<Option<Vec<Credentials>>, DevicesError> {
    if let (Some(identity), Some(key)) = (identity, key) {
        let device = Credentials {
            identity,
            key: KeySource::Given(key),
        };
        return Ok(Some(vec![device; sockets as usize]));
    }
    let Some(dir) = keys_dir else {
        return Ok(None);
    };
    let shown = dir.display().to_string();
    let mut names = client::identities_in(&dir).map_err(|source| DevicesError::List {
        dir: shown.clone(),
        source,
    })?;
    if names.len() < sockets as usize {
        return Err(DevicesError::TooFew {
            dir: shown,
            found: names.len(),
            sockets,
        });
    }
    names.truncate(sockets as usize);
    let devices = names.into_iter().map(|identity| Credentials {
        identity,
        key: KeySource::Dir(dir.clone()),
    });
    Ok(Some(devices.collect()))
}

/// Acknowledgement latency: over the whole run, and since the last progress line.
struct Latency {
    total: Histogram<u64>,
    window: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            total: new_histogram(),
            window: new_histogram(),
        }
    }
}

impl Latency {
    fn record(&mut self, micros: u64) {
        let _ = self.total.record(micros);
        let _ = self.window.record(micros);
    }
}

/// What the progress lines read.
#[derive(Clone)]
struct Meter {
    stats: Arc<Stats>,
    issued: Arc<AtomicU64>,
    latency: Arc<Mutex<Latency>>,
    started: Instant,
    json: bool,
}

impl Meter {
    /// The JSON progress line; takes (and resets) the latency window.
    fn progress_line(&self, acked_last_second: Option<u64>, done: bool) -> String {
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let progress = Progress {
            elapsed_secs: self.started.elapsed().as_secs_f64(),
            readings: self.issued.load(Ordering::Relaxed),
            acked: self.stats.acked.get(),
            failed: self.stats.failed.get(),
            retransmissions: self.stats.retransmitted.get(),
            unavailable: self.stats.unavailable.get(),
            acked_per_sec: acked_last_second.map(|n| n as f64),
            window: Percentiles::of(&latency.window),
            total: Percentiles::of(&latency.total),
            done,
        };
        latency.window.reset();
        progress.to_line()
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits: constant bounds that `new_with_bounds` accepts,
    // so the error case cannot happen.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid constant histogram bounds")
}

async fn progress(meter: Meter) {
    let (stats, started) = (&meter.stats, meter.started);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let acked = stats.acked.get();
        if meter.json {
            eprintln!("{}", meter.progress_line(Some(acked - last), false));
            last = acked;
            continue;
        }
        eprintln!(
            "[{:6.1}s] sent {}  acked {}  retransmitted {}  5.03 {}  failed {}  {:.0}/s",
            started.elapsed().as_secs_f64(),
            stats.sent.get(),
            acked,
            stats.retransmitted.get(),
            stats.unavailable.get(),
            stats.failed.get(),
            (acked - last) as f64
        );
        last = acked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Meter {
        Meter {
            stats: Arc::new(Stats::default()),
            issued: Arc::new(AtomicU64::new(0)),
            latency: Arc::new(Mutex::new(Latency::default())),
            started: Instant::now(),
            json: true,
        }
    }

    #[test]
    fn over_dtls_socket_j_is_the_jth_key_file_and_too_few_files_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b", "c", "a"] {
            std::fs::write(dir.path().join(name), "0123456789abcdef").unwrap();
        }
        let keys = || Some(dir.path().to_path_buf());
        let got = devices(keys(), None, None, 2).unwrap().unwrap();
        let names: Vec<&str> = got.iter().map(|d| d.identity.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(matches!(
            devices(keys(), None, None, 4),
            Err(DevicesError::TooFew { found: 3, .. })
        ));
        let one = devices(None, Some("sim-1".into()), Some("k".repeat(16)), 3);
        let one = one.unwrap().unwrap();
        assert_eq!(one.len(), 3);
        assert!(one.iter().all(|d| d.identity == "sim-1"));
        assert!(devices(None, None, None, 3).unwrap().is_none());
        // A key that cannot work stops the run before it starts.
        let short = devices(None, Some("sim-1".into()), Some("short".into()), 1);
        assert!(matches!(short, Err(DevicesError::Key { .. })), "{short:?}");
        std::fs::write(dir.path().join("a"), "").unwrap();
        assert!(matches!(
            devices(keys(), None, None, 1),
            Err(DevicesError::Key { .. })
        ));
    }

    #[test]
    fn a_fleet_is_a_socket_a_device_one_reading_at_a_time_on_its_own_schedule() {
        let fleet = Shape::of(8, Some(32), None, None, Some(2.0), true).unwrap();
        let expected = Shape {
            sockets: 32,
            window: 1,
            rate: Some(16.0),
            assignment: Assignment::OwnSchedule,
            ports: SourcePort::PerExchange,
        };
        assert_eq!(fleet, expected);
        let paced = Shape::of(8, Some(32), None, Some(50.0), None, false).unwrap();
        assert_eq!(
            (paced.window, paced.rate, paced.assignment),
            (1, Some(50.0), Assignment::FirstFree)
        );
        assert_eq!(
            Shape::of(4, None, None, None, Some(1.0), false)
                .unwrap()
                .window,
            1
        );
        assert_eq!(
            Shape::of(4, None, Some(4), None, None, true),
            Err(ShapeError::Window(4))
        );
        assert_eq!(
            Shape::of(4, Some(2), None, None, Some(0.0), false),
            Err(ShapeError::Interval(0.0))
        );
    }

    #[test]
    fn sockets_with_a_window_are_as_they_were() {
        let shape = Shape::of(8, None, None, Some(100.0), None, false).unwrap();
        let expected = Shape {
            sockets: 8,
            window: DEFAULT_WINDOW,
            rate: Some(100.0),
            assignment: Assignment::FirstFree,
            ports: SourcePort::Kept,
        };
        assert_eq!(shape, expected);
        let unpaced = Shape::of(2, None, Some(1024), Some(0.0), None, false).unwrap();
        assert_eq!((unpaced.window, unpaced.rate), (1024, None));
    }

    #[test]
    fn a_json_progress_line_has_counts_and_both_latency_windows() {
        let m = meter();
        m.issued.store(3, Ordering::Relaxed);
        m.stats.acked.inc_by(2);
        m.latency.lock().unwrap().record(2_000);
        m.latency.lock().unwrap().record(4_000);
        let line: serde_json::Value =
            serde_json::from_str(&m.progress_line(Some(2), false)).unwrap();
        assert_eq!(line["event"], "progress");
        assert_eq!(
            (line["readings"].as_u64(), line["acked"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(line["window"]["count"], 2);
        assert!((line["total"]["p99_ms"].as_f64().unwrap() - 4.0).abs() < 0.01);
        assert_eq!(line["done"], false);
        assert_eq!(line["acked_per_sec"], 2.0);
        // The window restarts with each line; the total keeps everything.
        let next: serde_json::Value = serde_json::from_str(&m.progress_line(None, true)).unwrap();
        assert!(next["window"].is_null());
        assert_eq!(next["total"]["count"], 2);
        assert_eq!(next["done"], true);
        assert!(next["acked_per_sec"].is_null());
    }
}
