//! `iot-operator`: `crd` prints the CustomResourceDefinition, `run` runs the controller.

mod controller;
mod crd;

use clap::{Parser, Subcommand};

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot serialize the CRD: {err}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
