//! `iot-operator`: `crd` prints the CustomResourceDefinition, `run` runs the controller. The
//! load-test tool is a binary of its own, `iot-loadtest` (tools/loadtest).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use iot_common::http::{self, Readiness};
use iot_common::logging::{self, LogArgs};
use iot_common::runtime::{self, Threads};
use iot_common::shutdown::Shutdown;
use kube::runtime::events::Reporter;
use prometheus_client::registry::Registry;

use iot_operator::controller::{self, Context, WatchScope};
use iot_operator::metrics::Metrics;
use iot_operator::{api_client, crd, leader};

#[derive(Parser, Debug)]
#[command(
    name = "iot-operator",
    version,
    about = "Reconciles IotMonitor resources into an IoT monitoring stack"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the IotMonitor CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller with the ambient kubeconfig (in-cluster or $KUBECONFIG).
    Run(RunArgs),
    /// Moved: the load-test tool is the `iot-loadtest` binary now.
    // Hidden, and it only says where the tool went: linking the tool would bring plotters, its
    // font, reqwest and hdrhistogram back into the in-cluster binary, and running another binary
    // from here would make the controller a launcher. Kept so that a command line from before
    // the move gets a pointer instead of clap's "unrecognized subcommand".
    #[command(hide = true, disable_help_flag = true)]
    Loadtest {
        /// Whatever followed `loadtest`; not parsed.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (all namespaces when unset or empty).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    #[command(flatten)]
    log: LogArgs,
    /// Take a Lease before reconciling, so several replicas never act at once.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the leader Lease (the pod's namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "iot-operator-leader")]
    lease_name: String,
    /// This replica's identity in the Lease and in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Requests to the API server in flight at most; more wait their turn. Each holds an
    /// HTTP/1.1 connection (TLS state and buffers) while in flight.
    #[arg(long, env = "API_MAX_IN_FLIGHT", default_value_t = api_client::DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u16).range(1..))]
    api_max_in_flight: u16,
    /// Seconds between two questions to discovery whether the cluster serves the Prometheus
    /// operator's ServiceMonitor and PrometheusRule kinds (docs/alerts.md); 0 turns the
    /// Prometheus path off.
    #[arg(long, env = "PROMETHEUS_DISCOVERY_SECONDS", default_value_t = 60)]
    prometheus_discovery_seconds: u64,
    /// Seconds between two measurements of each monitor's storage (InfluxDB's statistics, for
    /// `status.storage` and autoGrow; docs/operator.md); 0 turns the forecast off.
    #[arg(long, env = "STORAGE_MEASURE_SECONDS", default_value_t = 300)]
    storage_measure_seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot serialize the CRD: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Loadtest { .. } => {
            eprintln!(
                "`iot-operator loadtest` is now the binary `iot-loadtest`: run it with the same \
                 flags (`cargo run -p iot-loadtest -- ...` in a checkout; docs/loadtest.md)"
            );
            // 1, the tool's own code for a set-up error: 2 would read as "thresholds missed".
            ExitCode::FAILURE
        }
        Command::Run(args) => {
            logging::init(&args.log);
            runtime::run(Threads::PerCore, async {
                match run(args).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(err) => {
                        tracing::error!(error = %err, "operator stopped");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot connect to the API server: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Http(#[from] http::BindError),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so a fresh process can rejoin as a follower")]
    LostLease,
}

async fn run(args: RunArgs) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    // Ready once the API server has answered; followers are ready too (they are healthy
    // stand-bys), so a rollout of two replicas never waits for a lease.
    let ready = Readiness::default();

    // One shutdown flag fans out to the HTTP server, the lease and the controller.
    let shutdown = Shutdown::on_signal();
    let side_port = http::spawn(args.http_addr, registry, ready.clone(), shutdown.wait()).await?;

    let client = api_client::connect(usize::from(args.api_max_in_flight)).await?;
    let version = client.apiserver_version().await?;
    let scope = WatchScope::from_setting(args.namespace.as_deref());
    tracing::info!(version = %version.git_version, watching = %scope, "connected to the API server");
    ready.set(true);

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(leader::random_identity);
    let reporter = Reporter {
        controller: "iot-operator".into(),
        instance: Some(identity.clone()),
    };
    let discovery = (args.prometheus_discovery_seconds > 0)
        .then(|| Duration::from_secs(args.prometheus_discovery_seconds));
    let ctx = Arc::new(
        Context::new(client.clone(), metrics.clone(), reporter)
            .with_prometheus_discovery(discovery)
            .with_storage_every(
                (args.storage_measure_seconds > 0)
                    .then(|| Duration::from_secs(args.storage_measure_seconds)),
            )
            // The pod's namespace (POD_NAMESPACE, as for the Lease): the stacks' InfluxDB
            // policies admit the operator's pods from there.
            .with_operator_namespace(Some(args.lease_namespace.clone())),
    );

    let outcome = if args.leader_election {
        leader::run_as_leader(
            client,
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            &metrics,
            shutdown.receiver(),
            |lost| controller::run(ctx.clone(), scope.clone(), lost),
        )
        .await
    } else {
        metrics.leader.set(1);
        controller::run(ctx.clone(), scope.clone(), shutdown.wait()).await;
        Ok(leader::Ended::Stopped)
    };
    shutdown.trigger();
    side_port.join().await;
    match outcome? {
        leader::Ended::Stopped => Ok(()),
        leader::Ended::LostLease => Err(RunError::LostLease),
    }
}
