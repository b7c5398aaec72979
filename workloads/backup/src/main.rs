//! iot-backup: see `iot-backup --help`, and docs/operations.md for how the operator runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use iot_backup::names::Wanted;
use iot_backup::{BackupError, Destination};
use iot_common::backup_result::BackupResult;
use iot_common::logging::{self, LogArgs};
use iot_common::runtime::{self, Threads};

/// Stores InfluxDB's portable backups in a directory or an S3 bucket and fetches them back.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    /// Where the one-line JSON result goes (the container's termination message).
    #[arg(long, env = "RESULT_FILE", default_value = "/dev/termination-log")]
    result_file: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pack a portable backup, store it, and keep only the newest `keep`.
    Store {
        /// The directory `influxd backup -portable` wrote.
        #[arg(long, env = "BACKUP_SOURCE")]
        source: PathBuf,
        /// Where the archive is packed before it is stored (an emptyDir).
        #[arg(long, env = "BACKUP_WORK")]
        work: PathBuf,
        /// The IotMonitor: backups are named `<monitor>-<time>.tar.gz`.
        #[arg(long, env = "MONITOR")]
        monitor: String,
        /// How many backups to keep.
        #[arg(long, env = "BACKUP_KEEP", value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
        #[command(flatten)]
        destination: Destination,
    },
    /// Fetch one backup and unpack it into `<into>/data` (its name into `<into>/name`).
    Fetch {
        /// `latest`, or a backup's name.
        #[arg(long, env = "RESTORE_BACKUP", default_value = "latest")]
        backup: String,
        #[arg(long, env = "RESTORE_INTO")]
        into: PathBuf,
        #[arg(long, env = "MONITOR")]
        monitor: String,
        #[command(flatten)]
        destination: Destination,
    },
    /// Print the stored backups of a monitor, oldest first, with their sizes in bytes.
    List {
        #[arg(long, env = "MONITOR")]
        monitor: String,
        #[command(flatten)]
        destination: Destination,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    runtime::run(Threads::One, async move {
        let (result, destination) = match &cli.command {
            Command::Store {
                source,
                work,
                monitor,
                keep,
                destination,
            } => {
                let keep = usize::try_from(*keep).unwrap_or(usize::MAX);
                (
                    iot_backup::store(destination, source, work, monitor, keep).await,
                    destination,
                )
            }
            Command::Fetch {
                backup,
                into,
                monitor,
                destination,
            } => (
                iot_backup::fetch(destination, monitor, &Wanted::parse(backup), into).await,
                destination,
            ),
            Command::List {
                monitor,
                destination,
            } => {
                return match iot_backup::list(destination, monitor).await {
                    Ok(found) => {
                        for (name, size) in found {
                            println!("{name}\t{size}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => report(&cli, failed(&e, destination)),
                };
            }
        };
        match result {
            Ok(done) => report(&cli, done),
            Err(e) => report(&cli, failed(&e, destination)),
        }
    })
}

fn failed(error: &BackupError, destination: &Destination) -> BackupResult {
    BackupResult::Failed {
        error: error.to_string(),
        fix: error.fix(destination),
    }
}

/// Prints the result, leaves it as the termination message, and says how the run ended.
fn report(cli: &Cli, result: BackupResult) -> ExitCode {
    let line = result.to_line();
    println!("{line}");
    if let Err(e) = std::fs::write(&cli.result_file, &line) {
        tracing::warn!(file = %cli.result_file.display(), error = %e, "cannot write the result");
    }
    match result {
        BackupResult::Failed { error, fix } => {
            tracing::error!(error, fix = fix.unwrap_or_default(), "failed");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}
