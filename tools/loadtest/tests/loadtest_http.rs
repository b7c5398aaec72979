#![allow(clippy::unwrap_used)]
//! The Grafana load engine of `iot-loadtest` against a small HTTP server on
//! 127.0.0.1: users arrive on a short profile's schedule, each runs the flow, every request is
//! counted on both sides, latency percentiles reflect the server's delays, and Ctrl-C (the stop
//! signal) or the deadline cut a run short. Every run here is a few seconds long.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use iot_loadtest::http_load::{self, HttpLoad};
use iot_loadtest::meter::LoadMeter;
use iot_loadtest::profile::Profile;
use iot_loadtest::schedule;
use tokio::sync::watch;

/// Requests seen per path.
type Seen = Arc<Mutex<BTreeMap<String, u64>>>;

/// `/fast` answers after 10 ms, `/slow` after 40 ms, `/missing` is a 404, `/hang` never ends.
async fn server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let counted = seen.clone();
    let app = Router::new().route(
        "/{path}",
        get(move |Path(path): Path<String>| {
            let counted = counted.clone();
            async move {
                *counted.lock().unwrap().entry(path.clone()).or_default() += 1;
                let delay = match path.as_str() {
                    "fast" => 10,
                    "slow" => 40,
                    "hang" => 600_000,
                    _ => return (StatusCode::NOT_FOUND, "no such page"),
                };
                tokio::time::sleep(Duration::from_millis(delay)).await;
                (StatusCode::OK, "<html>dashboard</html>")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn load(url: &str, profile: &str, deadline: Duration) -> HttpLoad {
    let p = Profile::parse(profile).unwrap().grafana;
    HttpLoad {
        base_url: url.to_owned(),
        paths: p.paths,
        loops: p.loops,
        arrivals: schedule::arrivals(&p.phases),
        deadline: Instant::now() + deadline,
        request_timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn every_user_runs_the_whole_flow_and_latency_shows_the_server_delays() {
    let (url, seen) = server().await;
    // 2 users/s for 2 s, a 1 s pause, 3 users/s for 1 s: 7 users, each 4 x (fast, slow).
    let profile = "grafana: {phases: [{duration: 2, arrivalRate: 2}, {pause: 1}, {duration: 1, arrivalRate: 3}], \
                   flow: {loop: 4, get: [/fast, /slow]}}";
    let meter = Arc::new(LoadMeter::default());
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = http_load::run(
        load(&url, profile, Duration::from_secs(120)),
        meter.clone(),
        stop,
    )
    .await;

    assert_eq!(outcome.users_started, 7);
    assert_eq!(outcome.users_cut_short, 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        BTreeMap::from([("fast".into(), 28), ("slow".into(), 28)])
    );
    assert_eq!(meter.counts(), (56, 56, 0));
    let total = meter.total().unwrap();
    assert_eq!(total.count, 56);
    // Half the requests take at least 10 ms, the other half at least 40 ms; bounds from below
    // only, since a loaded machine makes everything slower.
    assert!(total.p50_ms >= 10.0, "{total:?}");
    assert!(
        total.p95_ms >= 40.0 && total.p99_ms >= total.p95_ms,
        "{total:?}"
    );
    assert_eq!(meter.sample().users, Some(0), "every user has finished");
}

#[tokio::test]
async fn error_answers_count_as_failed_not_acknowledged() {
    let (url, seen) = server().await;
    let profile = "grafana: {phases: [{duration: 1, arrivalRate: 2}], flow: {loop: 3, get: [/fast, /missing]}}";
    let meter = Arc::new(LoadMeter::default());
    let (_stop_tx, stop) = watch::channel(false);
    http_load::run(
        load(&url, profile, Duration::from_secs(120)),
        meter.clone(),
        stop,
    )
    .await;
    assert_eq!(seen.lock().unwrap()["missing"], 6);
    assert_eq!(meter.counts(), (12, 6, 6));
}

#[tokio::test]
async fn the_stop_signal_ends_a_run_at_once_even_mid_request() {
    let (url, _) = server().await;
    // Users that would run for ever: one request that never answers, a long schedule.
    let profile =
        "grafana: {phases: [{duration: 600, arrivalRate: 1}], flow: {loop: 1, get: [/hang]}}";
    let meter = Arc::new(LoadMeter::default());
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(http_load::run(
        load(&url, profile, Duration::from_secs(600)),
        meter.clone(),
        stop,
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop_tx.send(true).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run ends soon after the stop signal")
        .unwrap();
    assert!((2..=4).contains(&outcome.users_started), "{outcome:?}");
    assert_eq!(meter.counts().1, 0, "nothing was answered");
    assert_eq!(
        meter.sample().users,
        Some(0),
        "stopped users are no longer counted"
    );
}

#[tokio::test]
async fn the_deadline_cuts_off_users_still_busy() {
    let (url, _) = server().await;
    let profile =
        "grafana: {phases: [{duration: 1, arrivalRate: 2}], flow: {loop: 1, get: [/hang]}}";
    let meter = Arc::new(LoadMeter::default());
    let (_stop_tx, stop) = watch::channel(false);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        http_load::run(load(&url, profile, Duration::from_secs(3)), meter, stop),
    )
    .await
    .expect("the deadline bounds the run");
    assert_eq!(outcome.users_started, 2);
    assert_eq!(outcome.users_cut_short, 2);
}
