//! `iot-loadtest`: puts load on a running IotMonitor (CoAP through a sensor-sim Job, or HTTP
//! against Grafana), records the HPAs, pods and load every second into `DIR/timeline.csv`, and
//! draws `DIR/timeline.png` and `.svg`. docs/loadtest.md is the manual.
//!
//! The parts: [`profile`] and [`schedule`] (what load, pure), [`http_load`] and `coap_job`
//! (the two loads), [`devices`] (the CoAP load's devices in the monitor), [`meter`] (what the load did), `sampler` (what the cluster did),
//! [`recorder`] and [`timeline`] (the CSV), [`plot`], `progress`. This module wires them.
//! Public are the modules another crate uses (this binary, `tests/loadtest_http.rs`, the e2e
//! tests) or whose types a public signature names; the rest is this crate's own.
//!
//! A crate of its own so the in-cluster controller does not link what only this tool needs
//! (plotters and its font, reqwest, hdrhistogram). It calls the operator library only downward,
//! to see a monitor as the controller sees it: `crd` (the IotMonitor), `controller::dereference`
//! and `controller::validate` (the resolved names, ports, replica bounds and simulator image),
//! `controller::desired::pod` (the `restricted` security contexts of the load Job's pod) and
//! `constants`.

// Every public item is for another crate (the binary, the tests); each says what it is.
#![warn(missing_docs)]

pub mod args;
mod coap_job;
pub mod devices;
pub mod http_load;
pub mod meter;
pub mod plot;
pub mod profile;
mod progress;
mod quantity;
pub mod recorder;
mod run;
mod sampler;
pub mod schedule;
pub mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;

pub use args::{LoadtestArgs, PlotComponent, Target};
pub use run::run;

use iot_operator::controller::validate::InvalidSpec;
use meter::Verdict;
use profile::{Profile, ProfileError};
use recorder::Ended;

/// Why a run could not start or finish its output (exit status 1). A load that ran but failed
/// is not an error: [`Report::load_error`] and [`Report::verdicts`] say so.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// No kubeconfig or in-cluster configuration that works.
    #[error("cannot connect to the API server: {0}")]
    Client(#[source] kube::Error),
    /// `--monitor` is missing (it is optional only with `--print-profile`).
    #[error("--monitor NAME is needed: the IotMonitor to load-test")]
    NoMonitor,
    /// The IotMonitor cannot be read.
    #[error("cannot read IotMonitor {name} in namespace {namespace}: {source}")]
    Monitor {
        /// Its name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// What the API server answered.
        #[source]
        source: kube::Error,
    },
    /// The IotMonitor (its name first) does not validate as the operator validates it.
    #[error("IotMonitor {0} cannot be load-tested as it is: {1}")]
    Invalid(String, #[source] InvalidSpec),
    /// `--plaintext` on an IotMonitor (its name) whose plain CoAP is closed.
    #[error(
        "IotMonitor {0} takes no plain CoAP (spec.coap.plaintext is false): leave out --plaintext to load it over DTLS, or open plain CoAP for the test with kubectl patch iotmonitor {0} --type merge -p '{{\"spec\":{{\"coap\":{{\"plaintext\":true}}}}}}'"
    )]
    PlaintextClosed(String),
    /// What the IotMonitor (its name first) refers to cannot be read.
    #[error("IotMonitor {0}: {1}")]
    Dereference(
        String,
        #[source] iot_operator::controller::dereference::DereferenceError,
    ),
    /// The `--profile` file cannot be read.
    #[error("cannot read the profile {0}: {1}")]
    ProfileFile(PathBuf, #[source] std::io::Error),
    /// The profile (its path first) is not a valid profile.
    #[error("profile {0}: {1}")]
    Profile(String, #[source] ProfileError),
    /// `--duration` or `--settle` out of range.
    #[error("--duration and --settle must be between 0 and 86400 seconds (and --duration above 0)")]
    Bounds,
    /// The output directory or the CSV cannot be written.
    #[error("cannot write {0}: {1}")]
    Output(PathBuf, #[source] std::io::Error),
    /// The plot cannot be drawn or written.
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
    /// The CoAP load's devices cannot be added to the monitor, or got no keys.
    #[error(transparent)]
    Devices(#[from] devices::DevicesError),
    /// Ctrl-C before the load started (while waiting for the devices' keys).
    #[error("interrupted before the load started")]
    Interrupted,
}

/// What a finished run reports.
#[derive(Debug)]
pub struct Report {
    /// Why the recording ended.
    pub ended: Ended,
    /// One per latency threshold of the profile's target.
    pub verdicts: Vec<Verdict>,
    /// The load could not run (the Job could not be created, its pod never started).
    pub load_error: Option<String>,
    /// `DIR/timeline.csv`.
    pub csv: PathBuf,
    /// `DIR/timeline.png`.
    pub png: PathBuf,
    /// `DIR/timeline.svg`.
    pub svg: PathBuf,
    /// Rows written to the CSV.
    pub rows: usize,
}

impl Report {
    /// 0: the load ran and met its thresholds; 2: it did not; 130: interrupted.
    pub fn exit_code(&self) -> ExitCode {
        if self.ended == Ended::Interrupted {
            ExitCode::from(130)
        } else if self.load_error.is_some() || self.verdicts.iter().any(|v| !v.pass) {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// How long each part may run (pure): the load, and the recording around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The load stops (no new user, no new reading) after this.
    pub load_for: Duration,
    /// Nothing of the command runs past this (the recorder's deadline).
    pub record_for: Duration,
}

/// Grafana users still busy when the phases end get this long to finish.
const HTTP_GRACE: Duration = Duration::from_secs(120);
/// The load Job's pod gets this long to be scheduled and pull its image.
const JOB_START: Duration = Duration::from_secs(60);

/// The plan of a run of `target` with `profile`, cut to `duration` if given, recording
/// `settle` longer than the load.
pub fn plan(
    target: Target,
    profile: &Profile,
    duration: Option<Duration>,
    settle: Duration,
) -> Plan {
    let cap = |d: Duration| duration.map_or(d, |max| d.min(max));
    let (load_for, tail) = match target {
        Target::Coap => (
            cap(profile.coap.duration),
            JOB_START + Duration::from_secs(coap_job::DRAIN_SECONDS),
        ),
        Target::Grafana => match duration {
            // A duration cuts the users off; without one they may finish their flow.
            Some(d) => (
                d.min(schedule::length(&profile.grafana.phases) + HTTP_GRACE),
                Duration::ZERO,
            ),
            None => (
                schedule::length(&profile.grafana.phases) + HTTP_GRACE,
                Duration::ZERO,
            ),
        },
        Target::None => (duration.unwrap_or(Duration::from_secs(60)), Duration::ZERO),
    };
    Plan {
        load_for,
        record_for: load_for + tail + settle,
    }
}

/// The entry point of the binary: logging, runtime, Ctrl-C, the run, the report.
pub fn main(args: LoadtestArgs) -> ExitCode {
    if args.print_profile {
        print!("{}", profile::REFERENCE_YAML);
        return ExitCode::SUCCESS;
    }
    iot_common::logging::init(&iot_common::logging::LogArgs {
        log_format: iot_common::logging::LogFormat::Plain,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            interrupt().await;
            eprintln!("\ninterrupted: stopping the load, cleaning up, writing the timeline (Ctrl-C again to quit at once)");
            let _ = stop_tx.send(true);
            interrupt().await;
            eprintln!("interrupted again: quitting; a load Job left behind ends by itself");
            std::process::exit(130);
        });
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{}", LoadtestError::Client(e));
                return ExitCode::FAILURE;
            }
        };
        match run(client, &args, stop_rx).await {
            Ok(report) => {
                println!(
                    "timeline: {} ({} rows), {}, {}",
                    report.csv.display(),
                    report.rows,
                    report.png.display(),
                    report.svg.display()
                );
                report.exit_code()
            }
            Err(LoadtestError::Interrupted) => ExitCode::from(130),
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Ctrl-C or SIGTERM.
async fn interrupt() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn coap_load_runs_the_profile_duration_unless_cut_shorter() {
        let p = Profile::reference();
        let full = plan(Target::Coap, &p, None, secs(0));
        assert_eq!(full.load_for, p.coap.duration);
        // Sending, the drain, and a minute for the pod to start.
        assert_eq!(full.record_for, p.coap.duration + secs(10 + 60));
        let cut = plan(Target::Coap, &p, Some(secs(30)), secs(100));
        assert_eq!(cut.load_for, secs(30));
        assert_eq!(cut.record_for, secs(30 + 70 + 100));
    }

    #[test]
    fn grafana_load_lets_the_last_users_finish_unless_a_duration_is_given() {
        let p = Profile::reference();
        assert_eq!(
            plan(Target::Grafana, &p, None, secs(0)).load_for,
            secs(600 + 120)
        );
        let cut = plan(Target::Grafana, &p, Some(secs(90)), secs(5));
        assert_eq!((cut.load_for, cut.record_for), (secs(90), secs(95)));
    }

    #[test]
    fn recording_only_lasts_the_duration() {
        let p = Profile::reference();
        assert_eq!(plan(Target::None, &p, None, secs(0)).record_for, secs(60));
        assert_eq!(
            plan(Target::None, &p, Some(secs(20)), secs(0)).record_for,
            secs(20)
        );
    }
}
