//! `iot-operator`: `crd` prints the CustomResourceDefinition, `run` runs the controller,
//! `loadtest` load-tests a running IotMonitor (`iot_operator::loadtest`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{ArgAction, Parser, Subcommand};
use kube::Client;
use kube::runtime::events::Reporter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use iot_operator::controller::{self, Context};
use iot_operator::http::{self, HttpState};
use iot_operator::metrics::Metrics;
use iot_operator::telemetry::{self, LogFormat};
use iot_operator::{crd, leader};

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
    // Its help text is on LoadtestArgs, beside the flags it explains.
    Loadtest(iot_operator::loadtest::LoadtestArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "plain")]
    log_format: LogFormat,
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
        Command::Loadtest(args) => iot_operator::loadtest::main(args),
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "operator stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("cannot connect to the API server: {0}")]
    Client(#[from] kube::Error),
    #[error("health server: {0}")]
    Http(#[from] std::io::Error),
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so a fresh process can rejoin as a follower")]
    LostLease,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: RunArgs) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));

    // One shutdown flag fans out to the HTTP server, the lease and the controller.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            termination_signal().await;
            tracing::info!("termination requested; shutting down gracefully");
            let _ = stop_tx.send(true);
        }
    });

    let http = tokio::spawn(http::serve(
        args.http_addr,
        HttpState {
            registry: Arc::new(registry),
            ready: ready.clone(),
        },
        stopped(stop_rx.clone()),
    ));

    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    tracing::info!(version = %version.git_version, namespace = ?args.namespace, "connected to the API server");
    ready.store(true, Ordering::Relaxed);

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(leader::random_identity);
    let reporter = Reporter {
        controller: "iot-operator".into(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), reporter));

    let outcome = if args.leader_election {
        leader::run_as_leader(
            client,
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            &metrics,
            stop_rx.clone(),
            |lost| controller::run(ctx.clone(), args.namespace.clone(), lost),
        )
        .await
    } else {
        metrics.leader.set(1);
        controller::run(
            ctx.clone(),
            args.namespace.clone(),
            stopped(stop_rx.clone()),
        )
        .await;
        Ok(leader::Ended::Stopped)
    };
    let _ = stop_tx.send(true);
    if let Ok(Err(err)) = http.await {
        tracing::warn!(error = %err, "health server ended with an error");
    }
    match outcome? {
        leader::Ended::Stopped => Ok(()),
        leader::Ended::LostLease => Err(RunError::LostLease),
    }
}
