//! A local Sensor.Community API for the integration tests: one scripted answer per path (the
//! 24-hour file, the 5-minute file, filter queries), and a log of the paths asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;

/// A local Sensor.Community: one scripted answer per path, and a log of the paths asked for.
#[derive(Clone, Default)]
pub struct Api {
    replies: Arc<Mutex<HashMap<String, (u16, String)>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Api {
    pub async fn start() -> (Self, String) {
        let api = Api::default();
        let app = axum::Router::new().fallback(answer).with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the API server");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (api, url)
    }

    pub fn set(&self, path: &str, status: u16, body: impl Into<String>) {
        self.replies
            .lock()
            .expect("replies")
            .insert(path.to_string(), (status, body.into()));
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("asked").clone()
    }
}

async fn answer(State(api): State<Api>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    api.asked.lock().expect("asked").push(path.clone());
    let (status, body) = api
        .replies
        .lock()
        .expect("replies")
        .get(&path)
        .cloned()
        .unwrap_or((404, String::new()));
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response")
}
