//! aqi-ingestor: Sensor.Community → DAQI → InfluxDB. See `aqi-ingestor --help` and
//! docs/aqi-ingestor.md.

use std::process::ExitCode;

use aqi_ingestor::app;
use aqi_ingestor::cli::Cli;
use clap::Parser;
use iot_common::logging;
use iot_common::runtime::{self, Threads};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log);
    // One thread: a poll is a sequential stream (fetch → parse → write) and the side port is
    // light, so more workers would only add stacks to the resident set.
    runtime::run(Threads::One, async {
        match app::run(cli).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "aqi-ingestor failed");
                ExitCode::FAILURE
            }
        }
    })
}
