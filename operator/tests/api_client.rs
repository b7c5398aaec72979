#![allow(clippy::unwrap_used)]
//! The operator's API client against a small HTTP server on 127.0.0.1 that counts the
//! requests it holds at once: past the bound, requests wait in the client, and none is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use iot_operator::api_client;

#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    most: AtomicUsize,
    served: AtomicUsize,
}

/// Answers every GET after 50 ms with an empty ConfigMap list, counting what it holds.
async fn server(gauge: Arc<Gauge>) -> String {
    let app = Router::new().fallback(get(move || {
        let gauge = gauge.clone();
        async move {
            let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
            gauge.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            gauge.now.fetch_sub(1, Ordering::SeqCst);
            gauge.served.fetch_add(1, Ordering::SeqCst);
            (
                [("content-type", "application/json")],
                r#"{"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {}, "items": []}"#,
            )
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn most_in_flight(max_in_flight: usize, requests: usize) -> (usize, usize) {
    let gauge = Arc::new(Gauge::default());
    let url = server(gauge.clone()).await;
    let config = kube::Config::new(url.parse().unwrap());
    let client = api_client::with_config(config, max_in_flight).unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client, "iot");
    let params = kube::api::ListParams::default();
    let lists = (0..requests).map(|_| api.list(&params));
    let results = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(lists))
        .await
        .expect("every request is answered");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    (
        gauge.most.load(Ordering::SeqCst),
        gauge.served.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn requests_past_the_bound_wait_and_all_are_served() {
    let (most, served) = most_in_flight(4, 40).await;
    assert_eq!(served, 40);
    assert!(most <= 4, "{most} requests were in flight at once");
    assert!(most >= 2, "requests still run side by side ({most})");
}

#[tokio::test]
async fn without_a_tight_bound_the_requests_run_side_by_side() {
    // The same load under the default bound: more at once than the tight bound allows, so the
    // test above measures the bound and not the server.
    let (most, served) = most_in_flight(usize::from(api_client::DEFAULT_MAX_IN_FLIGHT), 40).await;
    assert_eq!(served, 40);
    assert!(most > 4, "only {most} requests were in flight at once");
}
