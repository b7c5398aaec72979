//! The command line of `iot-loadtest`.

use std::path::PathBuf;

/// What to put load on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// CoAP readings to the coap-server Service, from a sensor-sim Job in the cluster.
    Coap,
    /// HTTP GETs of the Grafana dashboards, from this process.
    Grafana,
    /// No load: only record the timeline (while you drive the load some other way).
    None,
}

impl Target {
    /// The word for it in the plot's title: `coap`, `grafana`, `no` (load).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coap => "coap",
            Self::Grafana => "grafana",
            Self::None => "no",
        }
    }
}

/// Whose HPA and pods the plot shows.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotComponent {
    /// The coap-server Deployment and its HPA.
    CoapServer,
    /// The Grafana Deployment and its HPA.
    Grafana,
}

impl PlotComponent {
    /// The component's `app.kubernetes.io/name`.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::CoapServer => "coap-server",
            Self::Grafana => "grafana",
        }
    }
}

const LONG_ABOUT: &str = "\
Put load on a running IotMonitor and record how its autoscalers answer.

While the load runs, every second goes into DIR/timeline.csv: the desired and current replicas \
of the monitor's HPAs, the state, CPU (from the metrics API) and memory of each of its pods, the \
load sent and acknowledged, and the latency percentiles of that second. At the end, \
DIR/timeline.png and DIR/timeline.svg show the load-tested component's pods' CPU against the \
scale-out and scale-in thresholds, its replicas as steps, and the load.

--target coap (the default) runs sensor-sim's load mode as a Job in the monitor's namespace, \
sending to the coap-server Service; the Job is deleted at the end. The load is a fleet of \
--devices devices over DTLS (coaps://, port 5684), load-1..N: the command adds them to the \
monitor's spec.coap.devices (server-side apply, field manager iot-loadtest; your own devices are \
left alone), waits until the operator has their keys in the Secret <monitor>-devices, mounts \
those keys into the Job's pod, and removes the devices again at the end. The profile's rate is \
spread over the devices, each sending on its own schedule, by default from a new source port \
every reading (--new-port-per-reading): kube-proxy keeps a UDP flow on the pod it first chose, \
so only new flows reach the pods the HPA adds. --plaintext sends plain CoAP instead (the \
profile's sockets and window), for monitors with spec.coap.plaintext: true. --target grafana runs the \
reference experiment's users against Grafana from this process: new users arrive phase by phase \
and each GETs two dashboard URLs 100 times; p95 and p99 response times are judged against \
75 ms and 100 ms. The profile (phases, URLs, CoAP rate, thresholds) is built in; --profile \
replaces any part of it (docs/loadtest.md; --print-profile prints the built-in one to start from).

Ctrl-C stops the load, removes the Job and the devices, and still writes the CSV and the plot. Every run is \
bounded: by the profile, --duration and --settle (--until-scaled-in ends the settle once the \
HPA is back at its minimum).";

const AFTER_HELP: &str = "\
Every flag can also be set by the environment variable shown in brackets.

Exit status: 0 when the load ran and met its thresholds, 2 when it did not (or could not run), \
1 on a set-up error, 130 when interrupted.

Examples:
  # CoAP load with the reference profile, into ./loadtest-out: 32 devices over DTLS
  iot-loadtest --monitor lab
  # 100 devices, each keeping its source port (one flow each for the whole run)
  iot-loadtest --monitor lab --devices 100 --new-port-per-reading=false
  # plain CoAP, as before DTLS, for a monitor with spec.coap.plaintext: true
  iot-loadtest --monitor lab --plaintext
  # two minutes of load, then five of watching the scale-in
  iot-loadtest --monitor lab --duration 120 --settle 300 --out run1
  # the same, ending as soon as coap-server is back at its minimum
  iot-loadtest --monitor lab --duration 120 --settle 900 --until-scaled-in
  # the reference Grafana experiment, from outside the cluster
  kubectl port-forward svc/lab-grafana 3000 &
  iot-loadtest --monitor lab --target grafana --url http://127.0.0.1:3000
  # only record (say, while Artillery runs tools/loadtest/artillery-grafana.yml)
  iot-loadtest --monitor lab --target none --plot grafana --duration 900
  # start a profile of your own from the built-in one
  iot-loadtest --print-profile > mine.yaml";

/// Devices of the CoAP load unless `--devices` says otherwise: a fleet, not a few flows.
pub const DEFAULT_DEVICES: u32 = 32;

/// The command line of `iot-loadtest`; each field is a flag, documented where it is declared.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "iot-loadtest",
    version,
    about = "Put load on an IotMonitor and record how its autoscalers answer (timeline CSV and plot)",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
pub struct LoadtestArgs {
    /// Name of the IotMonitor to load-test.
    #[arg(
        long,
        env = "LOADTEST_MONITOR",
        required_unless_present = "print_profile"
    )]
    pub monitor: Option<String>,

    /// Its namespace (default: the kubeconfig context's namespace).
    #[arg(long, short = 'n', env = "LOADTEST_NAMESPACE")]
    pub namespace: Option<String>,

    /// What to put load on.
    #[arg(long, value_enum, env = "LOADTEST_TARGET", default_value = "coap")]
    pub target: Target,

    /// Load profile, YAML or JSON; parts left out keep the built-in reference profile.
    #[arg(long, env = "LOADTEST_PROFILE")]
    pub profile: Option<PathBuf>,

    /// Stop the load after this many seconds (default: the profile's length; 60 with --target none).
    #[arg(long, env = "LOADTEST_DURATION")]
    pub duration: Option<f64>,

    /// Keep recording this many seconds after the load has stopped, to see the scale-in.
    #[arg(long, env = "LOADTEST_SETTLE", default_value_t = 0.0)]
    pub settle: f64,

    /// End the settle early once the plotted component's HPA is back at its minReplicas
    /// (desired and current) for 10 s: a scale-in cycle recorded without waiting out --settle.
    #[arg(long, env = "LOADTEST_UNTIL_SCALED_IN")]
    pub until_scaled_in: bool,

    /// Directory for timeline.csv, timeline.png and timeline.svg (created if missing).
    #[arg(long, env = "LOADTEST_OUT", default_value = "loadtest-out")]
    pub out: PathBuf,

    /// Grafana's base URL (default: the Service's cluster DNS name, reachable only from inside
    /// the cluster; from outside use a port-forward or the NodePort).
    #[arg(long, env = "LOADTEST_URL")]
    pub url: Option<String>,

    /// sensor-sim image of the CoAP load Job (default: the one the IotMonitor resolves to).
    #[arg(long, env = "LOADTEST_IMAGE")]
    pub image: Option<String>,

    /// CoAP load over DTLS: this many devices, load-1..N, each with its own identity, socket
    /// and schedule; the profile's rate is spread over them. Added to the monitor's
    /// spec.coap.devices for the run, removed after it.
    #[arg(long, env = "LOADTEST_DEVICES", default_value_t = DEFAULT_DEVICES, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub devices: u32,

    /// CoAP load over DTLS: each reading from a new source port, so a new handshake and a new
    /// UDP flow; `--new-port-per-reading=false` keeps one port per device. On by default since
    /// kube-proxy keeps a flow on the pod it first reached: only new flows spread the load over
    /// the pods the HPA adds.
    #[arg(
        long,
        env = "LOADTEST_NEW_PORT_PER_READING",
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub new_port_per_reading: bool,

    /// CoAP load in plaintext (coap://, spec.coap.port), as before DTLS: the profile's sockets
    /// and window, no devices. Only for a monitor with spec.coap.plaintext: true.
    #[arg(long, env = "LOADTEST_PLAINTEXT", conflicts_with_all = ["devices", "new_port_per_reading"])]
    pub plaintext: bool,

    /// Whose HPA and pods to plot (default: the target's; coap-server for --target none).
    #[arg(long, value_enum, env = "LOADTEST_PLOT")]
    pub plot: Option<PlotComponent>,

    /// Print the built-in profile (YAML, commented) and exit: a starting point for --profile.
    #[arg(long)]
    pub print_profile: bool,
}

impl LoadtestArgs {
    /// Arguments for a run from code (tests): everything else at its default.
    pub fn new(monitor: &str, target: Target, out: PathBuf) -> Self {
        Self {
            monitor: Some(monitor.to_owned()),
            namespace: None,
            target,
            profile: None,
            duration: None,
            settle: 0.0,
            until_scaled_in: false,
            out,
            url: None,
            image: None,
            devices: DEFAULT_DEVICES,
            new_port_per_reading: true,
            plaintext: false,
            plot: None,
            print_profile: false,
        }
    }

    /// Whose HPA and pods to plot: `--plot`, else the target's.
    pub fn plot_component(&self) -> PlotComponent {
        self.plot.unwrap_or(match self.target {
            Target::Grafana => PlotComponent::Grafana,
            Target::Coap | Target::None => PlotComponent::CoapServer,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Result<LoadtestArgs, clap::Error> {
        LoadtestArgs::try_parse_from(["iot-loadtest", "--monitor", "lab"].iter().chain(args))
    }

    #[test]
    fn the_command_line_is_consistent() {
        LoadtestArgs::command().debug_assert();
    }

    #[test]
    fn coap_load_is_a_fleet_of_devices_on_new_ports_unless_said_otherwise() {
        let default = parse(&[]).unwrap();
        assert_eq!(
            (
                default.devices,
                default.new_port_per_reading,
                default.plaintext
            ),
            (DEFAULT_DEVICES, true, false)
        );
        assert!(
            parse(&["--new-port-per-reading"])
                .unwrap()
                .new_port_per_reading
        );
        let kept = parse(&["--devices", "100", "--new-port-per-reading=false"]).unwrap();
        assert_eq!((kept.devices, kept.new_port_per_reading), (100, false));
        assert!(parse(&["--plaintext"]).unwrap().plaintext);
    }

    #[test]
    fn plaintext_takes_no_device_flags() {
        for clash in [
            &["--plaintext", "--devices", "4"][..],
            &["--plaintext", "--new-port-per-reading"][..],
        ] {
            let err = parse(clash).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{clash:?}"
            );
        }
    }
}
