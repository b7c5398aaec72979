//! aqi-ingestor: Sensor.Community → DAQI → InfluxDB. See `aqi-ingestor --help` and
//! docs/aqi-ingestor.md.

use std::process::ExitCode;

use aqi_ingestor::app;
use aqi_ingestor::cli::Cli;
use clap::Parser;
use iot_common::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(&cli.log);
    // One thread: a poll is a sequential stream (fetch → parse → write) and the side port is
    // light, so more workers would only add stacks to the resident set.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "aqi-ingestor failed");
            ExitCode::FAILURE
        }
    }
}
