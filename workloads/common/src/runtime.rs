//! The async runtime of a binary.

use std::future::Future;
use std::process::ExitCode;

/// How many threads a binary's async runtime gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// One thread: cheapest for work that is mostly message passing or a sequential stream.
    One,
    /// One worker per core.
    PerCore,
}

/// Builds the tokio runtime and runs `main` on it; a runtime that cannot start is logged and
/// ends the process with a failure code.
pub fn run(threads: Threads, main: impl Future<Output = ExitCode>) -> ExitCode {
    let built = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match built {
        Ok(rt) => rt.block_on(main),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            ExitCode::FAILURE
        }
    }
}
