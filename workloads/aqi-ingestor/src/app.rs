//! Wiring: side port, start-up against InfluxDB, and the poll loop until shutdown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iot_common::http::{self, Readiness};
use iot_common::{InfluxClient, RetryPolicy, Shutdown, WriteError};
use prometheus_client::registry::Registry;
use tokio::time::MissedTickBehavior;

use crate::cli::Cli;
use crate::fetch::{FetchError, Fetcher, Source};
use crate::means::Windows;
use crate::metrics::Metrics;
use crate::poll::{PollConfig, PollOutcome, PollReport, Poller};
use crate::service::{CycleReport, Means, Service};
use crate::sink::Sink;
use crate::store;
use crate::timestamp::EpochSeconds;
use crate::transform::{Feed, MEASUREMENT, READINGS_MEASUREMENT};
use crate::values::SkipReason;
use crate::watermark::Watermarks;

/// How often readiness (InfluxDB answers `/ping`) is checked.
const READINESS_PERIOD: Duration = Duration::from_secs(5);
/// Longest pause between start-up attempts while InfluxDB is away.
const MAX_STARTUP_BACKOFF: Duration = Duration::from_secs(30);

/// Why the ingestor stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The InfluxDB settings do not make a client.
    #[error("cannot build the InfluxDB client: {0}")]
    Client(#[from] iot_common::influx::HttpError),
    /// A source does not make a fetcher.
    #[error(transparent)]
    Fetcher(#[from] FetchError),
    /// The side port (metrics and health) could not be bound.
    #[error(transparent)]
    BindHttp(#[from] http::BindError),
    /// InfluxDB refused what start-up needs of it, for good.
    #[error("InfluxDB is not usable: {0}")]
    Startup(#[source] WriteError),
    /// A single run (`--once`, `--dry-run`) ended without success.
    #[error("the poll ended {}", .0.as_str())]
    PollFailed(PollOutcome),
    /// A single run could not write the 24-hour means it computed.
    #[error("writing the computed 24-hour means failed")]
    MeansFailed,
    /// The sources given cannot be used (none, or one that does not parse).
    #[error("{0}")]
    Sources(String),
}

/// Runs the ingestor as `cli` says until a signal stops it, or polls once with `--once` or
/// `--dry-run`.
pub async fn run(cli: Cli) -> Result<(), AppError> {
    let shutdown = Shutdown::on_signal();
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::default();
    let daily_source = cli.daily_source().map_err(AppError::Sources)?;
    let readings_source = cli.readings_source().map_err(AppError::Sources)?;
    if daily_source.is_none() && readings_source.is_none() {
        return Err(AppError::Sources(
            "no source: --source none needs a --readings-source".into(),
        ));
    }

    let once = cli.runs_once();
    let side_port = if once {
        None
    } else {
        Some(http::spawn(cli.http_addr, registry, readiness.clone(), shutdown.wait()).await?)
    };

    let client = if cli.dry_run {
        readiness.set(true);
        None
    } else {
        let client = InfluxClient::new(&cli.influx, &cli.influx_db)?;
        tokio::spawn(watch_readiness(
            client.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));
        Some(client)
    };
    let sink = || match &client {
        None => Sink::stdout(),
        Some(client) => Sink::Influx {
            client: client.clone(),
            retry: RetryPolicy::patient(),
        },
    };
    let config = |feed| PollConfig {
        batch_lines: usize::try_from(cli.batch_lines).unwrap_or(usize::MAX),
        max_clock_skew: Duration::from_secs(cli.max_clock_skew_seconds),
        threads: cli.threads(),
        feed,
        region: cli.region(),
    };
    let timeout = Duration::from_secs(cli.fetch_timeout_seconds);
    let poller = |source: Source, feed| -> Result<Poller, FetchError> {
        Ok(Poller {
            fetcher: Fetcher::new(source, timeout)?,
            watermarks: Watermarks::new(),
            sink: sink(),
            config: config(feed),
        })
    };
    let daily = daily_source
        .clone()
        .map(|s| poller(s, Feed::Daily))
        .transpose()?;
    let readings = readings_source
        .clone()
        .map(|s| poller(s, Feed::Readings))
        .transpose()?;
    let means = readings.as_ref().map(|_| Means {
        windows: Windows::new(),
        watermarks: Watermarks::new(),
        sink: sink(),
        batch_lines: usize::try_from(cli.batch_lines).unwrap_or(usize::MAX),
    });
    let mut service = Service::new(
        daily,
        readings,
        means,
        Duration::from_secs(cli.max_upstream_age_seconds),
    );
    if let Some(client) = &client {
        tokio::select! {
            r = start_up(client, &cli, &mut service) => r?,
            () = shutdown.wait() => return Ok(()),
        }
    }
    let show = |s: &Option<Source>| s.as_ref().map_or("none".to_string(), ToString::to_string);
    tracing::info!(
        source = %show(&daily_source),
        readings_source = %show(&readings_source),
        region = %cli.region().map_or("none".to_string(), |r| r.to_string()),
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
            r = service.cycle() => r,
            () = shutdown.wait() => break Ok(()),
        };
        metrics.record_cycle(&report, &service);
        for poll in &report.polls {
            log_report(poll);
        }
        log_means(&report, &service);
        if once {
            break match report.polls.iter().find(|p| !p.outcome.is_success()) {
                Some(p) => Err(AppError::PollFailed(p.outcome)),
                None if !report.is_success() => Err(AppError::MeansFailed),
                None => Ok(()),
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

/// Creates the database (if asked to), reads the watermarks back and rebuilds the 24-hour
/// windows. While InfluxDB is away this waits and retries (with `--once`, for about a minute); a
/// poll without watermarks would write readings that are already stored.
async fn start_up(client: &InfluxClient, cli: &Cli, service: &mut Service) -> Result<(), AppError> {
    let policy = RetryPolicy::patient();
    let started = tokio::time::Instant::now();
    let mut attempt = 1u32;
    loop {
        match try_start_up(client, cli, service).await {
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
    service: &mut Service,
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
    // Start from scratch on every attempt: a half-loaded state must not count.
    let daily_marks = match (&mut service.daily, &mut service.means) {
        (Some(p), _) => Some(&mut p.watermarks),
        (None, Some(m)) => Some(&mut m.watermarks),
        (None, None) => None,
    };
    if let Some(marks) = daily_marks {
        *marks = Watermarks::new();
        let sensors = store::load_watermarks(client, MEASUREMENT, marks).await?;
        tracing::info!(
            sensors,
            db = client.database(),
            measurement = MEASUREMENT,
            "newest stored point per sensor loaded"
        );
    }
    if let (Some(p), Some(m)) = (&mut service.readings, &mut service.means) {
        p.watermarks = Watermarks::new();
        let sensors =
            store::load_watermarks(client, READINGS_MEASUREMENT, &mut p.watermarks).await?;
        m.windows = Windows::new();
        let now = EpochSeconds::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        )
        .unwrap_or(EpochSeconds::MAX);
        let region = cli.region();
        let rebuilt = store::load_windows(
            client,
            &p.watermarks,
            region.as_deref(),
            now,
            &mut m.windows,
        )
        .await?;
        tracing::info!(
            sensors,
            windows = rebuilt,
            measurement = READINGS_MEASUREMENT,
            "newest stored reading per sensor loaded, 24-hour windows rebuilt"
        );
    }
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
    let feed = r.feed.as_str();
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
                feed, outcome, records, written = r.written, rejected = r.rejected,
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

fn log_means(report: &CycleReport, service: &Service) {
    let Some(means) = &service.means else {
        return;
    };
    let upstream = report.upstream.as_str();
    let windows = means.windows.len();
    match &report.means {
        None => tracing::debug!(upstream, windows, "upstream 24-hour means in use"),
        Some(m) => match &m.error {
            None => tracing::info!(
                upstream,
                windows,
                written = m.written,
                without_index = m.without_index,
                rejected = m.rejected,
                "computed 24-hour means written"
            ),
            Some(e) => tracing::warn!(
                upstream,
                windows,
                error = %e,
                "writing the computed 24-hour means failed; the next cycle offers them again"
            ),
        },
    }
}
