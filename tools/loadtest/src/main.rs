//! `iot-loadtest`: the command line of the load-test tool. Everything else is the library
//! (`iot_loadtest`), which the e2e tests run in-process; docs/loadtest.md is the manual.

use std::process::ExitCode;

use clap::Parser;
use iot_loadtest::LoadtestArgs;

fn main() -> ExitCode {
    iot_loadtest::main(LoadtestArgs::parse())
}
