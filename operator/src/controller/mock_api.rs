//! A small in-memory API server behind a `kube::Client` (through tower-test's mock service),
//! for fast tests of the client steps: it stores what is applied, answers reads and lists
//! (with label selectors), deletes, and logs every request, so a test can assert on the
//! order and the number of writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

type Objects = BTreeMap<String, Value>;

/// One request as the server saw it: `PATCH /apis/apps/v1/namespaces/iot/deployments/x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub query: String,
}

impl Call {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }

    /// The resource (plural) and name the call is about, such as `("deployments", "x")`;
    /// the name is empty for a list. A status write reads `("iotmonitors/status", "lab")`.
    pub fn target(&self) -> (String, String) {
        let parts: Vec<&str> = self.path.split('/').collect();
        let Some(ns) = parts.iter().position(|p| *p == "namespaces") else {
            return (self.path.clone(), String::new());
        };
        let resource = parts.get(ns + 2).copied().unwrap_or_default();
        let name = parts.get(ns + 3).copied().unwrap_or_default();
        match parts.get(ns + 4) {
            Some(sub) => (format!("{resource}/{sub}"), name.to_owned()),
            None => (resource.to_owned(), name.to_owned()),
        }
    }
}

#[derive(Clone, Default)]
pub struct MockApi {
    objects: Arc<Mutex<Objects>>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Resources (plurals) whose writes fail with 500, as a broken webhook or etcd would.
    refused: Arc<Mutex<Vec<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockApi {
    /// A client talking to a fresh, empty server; the server runs until the client is dropped.
    pub fn start() -> (Client, Self) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = Self::default();
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = server.answer(request).await;
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), api)
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The writes so far, as `(resource, name)`.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.calls()
            .iter()
            .filter(|c| c.is_write())
            .map(Call::target)
            .collect()
    }

    /// From now on every write to `resource` (a plural, such as `deployments`) fails with 500;
    /// `None` lets every write through again.
    pub fn refuse_writes_to(&self, resource: Option<&str>) {
        *lock(&self.refused) = resource.map(str::to_owned).into_iter().collect();
    }

    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }

    /// The stored object at `path` (such as `/api/v1/namespaces/iot/services/lab-grafana`).
    pub fn get(&self, path: &str) -> Option<Value> {
        lock(&self.objects).get(path).cloned()
    }

    /// Stores `object` at `path`, as if someone else had written it.
    pub fn put(&self, path: &str, mut object: Value) {
        let mut objects = lock(&self.objects);
        object["metadata"]["resourceVersion"] = json!(next_version(&objects));
        objects.insert(path.to_owned(), object);
    }

    /// Every stored object.
    pub fn objects(&self) -> Vec<Value> {
        lock(&self.objects).values().cloned().collect()
    }

    pub fn remove(&self, path: &str) -> Option<Value> {
        lock(&self.objects).remove(path)
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let call = Call {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
        };
        let merge = request
            .headers()
            .get("content-type")
            .is_some_and(|t| t.as_bytes() == b"application/merge-patch+json");
        let refused = call.is_write() && lock(&self.refused).contains(&call.target().0);
        lock(&self.calls).push(call);
        if refused {
            let (code, value) = status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &path);
            return Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(value.to_string().into_bytes()))
                .unwrap_or_else(|_| Response::new(Body::from(Vec::new())));
        }
        let body = request
            .into_body()
            .collect_bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut objects = lock(&self.objects);
        let (status, value) = match method {
            Method::GET => match objects.get(&path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None if is_collection(&path) => (StatusCode::OK, list(&objects, &path, &query)),
                None => not_found(&path),
            },
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if objects.contains_key(&key) {
                    status(StatusCode::CONFLICT, "AlreadyExists", &key)
                } else {
                    (StatusCode::CREATED, store(&mut objects, key, body))
                }
            }
            Method::PATCH if merge => merge_patch(&mut objects, &path, body),
            Method::PATCH => patch(&mut objects, &path, body),
            Method::DELETE => match objects.remove(&path) {
                Some(_) => status(StatusCode::OK, "", &path),
                None => not_found(&path),
            },
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", &path),
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(value.to_string().into_bytes()))
            .unwrap_or_else(|_| Response::new(Body::from(Vec::new())))
    }
}

fn next_version(objects: &Objects) -> String {
    let max = objects
        .values()
        .filter_map(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    (max + 1).to_string()
}

fn store(objects: &mut Objects, key: String, mut object: Value) -> Value {
    object["metadata"]["resourceVersion"] = json!(next_version(objects));
    if object.get("data").is_none()
        && let Some(string_data) = object.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        // As the API server does: stringData is written into data (base64 on the wire).
        object["data"] = base64_values(&string_data);
    }
    objects.insert(key, object.clone());
    object
}

/// Apply patches replace the object (one field manager owns everything in these tests);
/// `/status` writes the status only.
fn patch(objects: &mut Objects, path: &str, body: Value) -> (StatusCode, Value) {
    if let Some(parent) = path.strip_suffix("/status") {
        let Some(mut object) = objects.get(parent).cloned() else {
            return not_found(parent);
        };
        object["status"] = body["status"].clone();
        return (StatusCode::OK, store(objects, parent.to_owned(), object));
    }
    (StatusCode::OK, store(objects, path.to_owned(), body))
}

/// A JSON merge patch (RFC 7386), as the Secrets' keys are written: a `null` removes a field,
/// a `metadata.resourceVersion` must be the stored one (else 409), and `stringData` goes into
/// `data` as the API server writes it.
fn merge_patch(objects: &mut Objects, path: &str, body: Value) -> (StatusCode, Value) {
    let Some(mut object) = objects.get(path).cloned() else {
        return not_found(path);
    };
    let expected = body["metadata"]["resourceVersion"].as_str();
    if expected.is_some_and(|v| object["metadata"]["resourceVersion"].as_str() != Some(v)) {
        return status(StatusCode::CONFLICT, "Conflict", path);
    }
    merge(&mut object, &body);
    if let Some(added) = object.as_object_mut().and_then(|o| o.remove("stringData")) {
        let data = &mut object["data"];
        if !data.is_object() {
            *data = json!({});
        }
        merge(data, &base64_values(&added));
    }
    (StatusCode::OK, store(objects, path.to_owned(), object))
}

fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        match (value, target.as_object_mut()) {
            (Value::Null, Some(map)) => {
                map.remove(key);
            }
            (value, Some(map)) => merge(map.entry(key.clone()).or_insert(Value::Null), value),
            (_, None) => {}
        }
    }
}

fn base64_values(map: &Value) -> Value {
    use k8s_openapi::ByteString;
    let encoded: serde_json::Map<String, Value> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let bytes = ByteString(v.as_str().unwrap_or_default().as_bytes().to_vec());
            (
                k.clone(),
                serde_json::to_value(bytes).unwrap_or(Value::Null),
            )
        })
        .collect();
    Value::Object(encoded)
}

/// `/api/v1/namespaces/iot/secrets` (a collection) rather than `.../secrets/name`.
fn is_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts
        .iter()
        .position(|p| *p == "namespaces")
        .is_some_and(|ns| parts.len() == ns + 3)
}

fn list(objects: &Objects, collection: &str, query: &str) -> Value {
    let selector: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("labelSelector="))
        .flat_map(|s| decode(s).split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|term| {
            let (k, v) = term.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    let prefix = format!("{collection}/");
    let items: Vec<Value> = objects
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix) && !key[prefix.len()..].contains('/'))
        .map(|(_, object)| object)
        .filter(|object| {
            selector
                .iter()
                .all(|(k, v)| object["metadata"]["labels"][k].as_str() == Some(v.as_str()))
        })
        .cloned()
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
}

/// Percent-decoding of a query value.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], s.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap_or_default());
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn not_found(path: &str) -> (StatusCode, Value) {
    status(StatusCode::NOT_FOUND, "NotFound", path)
}

fn status(code: StatusCode, reason: &str, path: &str) -> (StatusCode, Value) {
    let failed = !code.is_success();
    (
        code,
        json!({
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": if failed { "Failure" } else { "Success" },
            "message": format!("{path}: {}", if failed { reason } else { "deleted" }),
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}
