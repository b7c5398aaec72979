//! Wiring: side port, start-up against InfluxDB, and the poll loop until shutdown.

use std::time::Duration;

use iot_common::http::{self, Readiness};
use iot_common::{InfluxClient, RetryPolicy, Shutdown, WriteError};
use prometheus_client::registry::Registry;
use tokio::time::MissedTickBehavior;

use crate::cli::Cli;
use crate::fetch::{FetchError, Fetcher};
use crate::metrics::Metrics;
use crate::poll::{PollConfig, PollOutcome, PollReport, Poller};
use crate::sink::Sink;
use crate::store;
use crate::values::SkipReason;
use crate::watermark::Watermarks;

/// How often readiness (InfluxDB answers `/ping`) is checked.
const READINESS_PERIOD: Duration = Duration::from_secs(5);
/// Longest pause between start-up attempts while InfluxDB is away.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot build the InfluxDB client: {0}")]
    Client(#[from] iot_common::influx::HttpError),
    #[error(transparent)]
    Fetcher(#[from] FetchError),
    #[error(transparent)]
    BindHttp(#[from] http::BindError),
    #[error("InfluxDB is not usable: {0}")]
    Startup(#[source] WriteError),
    #[error("the poll ended {}", .0.as_str())]
    PollFailed(PollOutcome),
}

pub async fn run(cli: Cli) -> Result<(), AppError> {
    let shutdown = Shutdown::on_signal();
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::default();

    let once = cli.runs_once();
    let side_port = if once {
        None
    } else {
        Some(http::spawn(cli.http_addr, registry, readiness.clone(), shutdown.wait()).await?)
    };

    let fetcher = Fetcher::new(
        cli.source.clone(),
        Duration::from_secs(cli.fetch_timeout_seconds),
    )?;
    let mut watermarks = Watermarks::new();
    let sink = if cli.dry_run {
        readiness.set(true);
        Sink::stdout()
    } else {
        let client = InfluxClient::new(&cli.influx, &cli.influx_db)?;
        tokio::spawn(watch_readiness(
            client.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        tokio::select! {
            r = start_up(&client, &cli, &mut watermarks) => r?,
            () = shutdown.wait() => return Ok(()),
        }
        Sink::Influx {
            client,
            retry: RetryPolicy::patient(),
        }
    };
    let mut poller = Poller {
        fetcher,
        watermarks,
        sink,
        config: PollConfig {
            batch_lines: usize::try_from(cli.batch_lines).unwrap_or(usize::MAX),
            max_clock_skew: Duration::from_secs(cli.max_clock_skew_seconds),
            threads: cli.threads(),
        },
    };
    tracing::info!(
        source = %cli.source,
        poll_seconds = cli.poll_seconds,
        threads = cli.threads(),
        dry_run = cli.dry_run,
        "polling"
    );

    let mut ticks = tokio::time::interval(Duration::from_secs(cli.poll_seconds));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.wait() => break Ok(()),
        }
        let report = tokio::select! {
            r = poller.poll() => r,
            () = shutdown.wait() => break Ok(()),
        };
        metrics.record(&report, poller.watermarks.len());
        log_report(&report);
        if once {
            break if report.outcome.is_success() {
                Ok(())
            } else {
                Err(AppError::PollFailed(report.outcome))
            };
        }
    };
    if let Some(side_port) = side_port {
        if result.is_ok() {
            // The server stops with the same signal.
            side_port.join().await;
        } else {
            side_port.abort();
        }
    }
    result
}

/// Creates the database (if asked to) and reads the watermarks back. While InfluxDB is away this
/// waits and retries (with `--once`, for about a minute); a poll without watermarks would write
/// readings that are already stored.
async fn start_up(
    client: &InfluxClient,
    cli: &Cli,
    watermarks: &mut Watermarks,
) -> Result<(), AppError> {
    let policy = RetryPolicy::patient();
    let started = tokio::time::Instant::now();
    let mut attempt = 1u32;
    loop {
        match try_start_up(client, cli, watermarks).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                let give_up = cli.runs_once()
                    && (!e.is_retryable()
                        || attempt >= policy.max_attempts
                        || started.elapsed() >= policy.deadline);
                if give_up {
                    return Err(AppError::Startup(e));
                }
                let pause = policy
                    .initial_backoff
                    .saturating_mul(1 << attempt.min(8))
                    .min(MAX_STARTUP_BACKOFF);
                tracing::warn!(error = %e, ?pause, "InfluxDB not usable yet, retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
        }
    }
}

async fn try_start_up(
    client: &InfluxClient,
    cli: &Cli,
    watermarks: &mut Watermarks,
) -> Result<(), WriteError> {
    if cli.create_database {
        match client.create_database().await {
            Ok(()) => {}
            // A user without admin rights may still write to a database created for it.
            Err(e @ WriteError::Auth { .. }) => {
                tracing::warn!(error = %e, db = client.database(), "cannot create the database; assuming it exists");
            }
            Err(e) => return Err(e),
        }
    }
    let sensors = store::load_watermarks(client, watermarks).await?;
    tracing::info!(
        sensors,
        db = client.database(),
        "newest stored reading per sensor loaded"
    );
    Ok(())
}

async fn watch_readiness(client: InfluxClient, readiness: Readiness, shutdown: Shutdown) {
    let check = async {
        loop {
            let up = client.ping().await;
            if up != readiness.get() {
                tracing::info!(ready = up, url = client.url(), "InfluxDB readiness changed");
            }
            readiness.set(up);
            tokio::time::sleep(READINESS_PERIOD).await;
        }
    };
    tokio::select! {
        () = check => {}
        () = shutdown.wait() => {}
    }
}

fn log_report(r: &PollReport) {
    let skipped: u64 = r.stats.values.skipped.iter().sum();
    let secs = r.elapsed.as_secs_f64();
    let records = r.stats.total_records();
    let rate = if secs > 0.0 {
        (records as f64 / secs).round()
    } else {
        0.0
    };
    let reasons: Vec<String> = SkipReason::ALL
        .iter()
        .filter(|&&s| r.stats.values.skipped(s) > 0)
        .map(|&s| format!("{}={}", s.as_str(), r.stats.values.skipped(s)))
        .collect();
    let outcome = r.outcome.as_str();
    let error = r
        .error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    // One set of fields for both outcomes (tracing wants the level and message as constants).
    macro_rules! poll_event {
        ($level:ident, $message:literal, $($extra:tt)*) => {
            tracing::$level!(
                outcome, records, written = r.written, rejected = r.rejected,
                skipped_values = skipped, skipped = %reasons.join(","), bytes = r.bytes,
                seconds = secs, $($extra)* $message
            )
        };
    }
    if r.outcome.is_success() {
        poll_event!(info, "poll done", records_per_second = rate,);
    } else {
        poll_event!(warn, "poll failed", error,);
    }
}
