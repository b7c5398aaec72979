//! The HTTP load engine: virtual users arrive on the schedule, and each GETs the profile's
//! paths in order, `loops` times, one request at a time. Each user has its own HTTP client and
//! so its own keep-alive connection, as an Artillery user has: behind a Kubernetes Service,
//! connections (not requests) are spread over the replicas, so a shared connection pool would
//! keep every request on the first replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::meter::LoadMeter;
use super::schedule::Arrival;

/// The Grafana users of one run: who arrives when, and what each one requests.
#[derive(Debug, Clone)]
pub struct HttpLoad {
    /// Base URL without a trailing slash, such as `http://lab-grafana.iot.svc:3000`.
    pub base_url: String,
    /// Every user GETs each path in order, `loops` times.
    pub paths: Vec<String>,
    /// How many times each user runs through `paths`.
    pub loops: u32,
    /// When each user starts, from the start of the run.
    pub arrivals: Vec<Arrival>,
    /// No user starts, and no request is sent, after this.
    pub deadline: Instant,
    /// One request's limit; a request that takes longer counts as failed.
    pub request_timeout: Duration,
}

/// What became of the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOutcome {
    /// Users that started their flow.
    pub users_started: u64,
    /// Users still busy when the deadline or Ctrl-C came.
    pub users_cut_short: u64,
}

/// Runs the load until every user is done, the deadline passes or `stop` turns true.
pub async fn run(
    load: HttpLoad,
    meter: Arc<LoadMeter>,
    stop: watch::Receiver<bool>,
) -> HttpOutcome {
    let start = tokio::time::Instant::now();
    let deadline = tokio::time::Instant::from_std(load.deadline);
    let load = Arc::new(load);
    let warned = Arc::new(AtomicBool::new(false));
    let mut users = JoinSet::new();
    let mut started = 0;
    for arrival in load.arrivals.iter().copied() {
        let at = start + arrival.at;
        if at >= deadline {
            break;
        }
        let mut waiting = stop.clone();
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            _ = waiting.wait_for(|s| *s) => break,
        }
        // Finished users are reaped as we go, so the set holds only the running ones.
        while users.try_join_next().is_some() {}
        started += 1;
        meter.user_started();
        users.spawn(user(
            load.clone(),
            meter.clone(),
            stop.clone(),
            warned.clone(),
        ));
    }
    let mut waiting = stop.clone();
    let all_done = async { while users.join_next().await.is_some() {} };
    let finished = tokio::select! {
        () = all_done => true,
        () = tokio::time::sleep_until(deadline) => false,
        _ = waiting.wait_for(|s| *s) => false,
    };
    let cut_short = if finished { 0 } else { users.len() as u64 };
    users.shutdown().await;
    HttpOutcome {
        users_started: started,
        users_cut_short: cut_short,
    }
}

async fn user(
    load: Arc<HttpLoad>,
    meter: Arc<LoadMeter>,
    mut stop: watch::Receiver<bool>,
    warned: Arc<AtomicBool>,
) {
    // Also ends the user's count when the task is aborted at the deadline.
    struct Finished(Arc<LoadMeter>);
    impl Drop for Finished {
        fn drop(&mut self) {
            self.0.user_finished();
        }
    }
    let _finished = Finished(meter.clone());
    let client = match reqwest::Client::builder()
        .timeout(load.request_timeout)
        .pool_max_idle_per_host(1)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn_once(&warned, &format!("cannot build an HTTP client: {e}"));
            return;
        }
    };
    for _ in 0..load.loops {
        for path in &load.paths {
            if *stop.borrow() || Instant::now() >= load.deadline {
                return;
            }
            let url = format!("{}{path}", load.base_url);
            meter.sent();
            let began = Instant::now();
            let answer = async {
                let response = client.get(&url).send().await?;
                let status = response.status();
                // The whole body, as a browser would load it.
                response.bytes().await?;
                Ok::<_, reqwest::Error>(status)
            };
            tokio::select! {
                result = answer => match result {
                    Ok(status) if status.is_success() => meter.acked(began.elapsed()),
                    Ok(status) => {
                        meter.failed();
                        warn_once(&warned, &format!("GET {url} answered {status}"));
                    }
                    Err(e) => {
                        meter.failed();
                        warn_once(&warned, &format!("GET {url} failed: {e}"));
                    }
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// The first failure is worth a log line; thousands of copies of it are not.
fn warn_once(warned: &AtomicBool, message: &str) {
    if !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "{message} (further failures are counted, not logged; from outside the cluster, pass --url)"
        );
    }
}
