//! The shipped Grafana dashboards as InfluxDB sees them: every raw InfluxQL query of a dashboard
//! ([`queries`]), with Grafana's macros and variables substituted ([`Macros`], [`link_variables`]),
//! so a test can run each against a real InfluxDB and require data ([`has_values`]).

// Test fixtures may panic: a malformed dashboard is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;

/// A shipped dashboard (`operator/dashboards/<file>`), parsed.
pub fn load(file: &str) -> Value {
    let path = crate::cluster::repo_dir()
        .join("operator/dashboards")
        .join(file);
    load_path(&path)
}

fn load_path(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Datasource uid of the dashboards → the database the operator's datasource points at.
pub fn database_of(uid: &str) -> &'static str {
    match uid {
        "iot-dht" => "dht",
        "iot-aqi" => "aqi",
        other => panic!("a dashboard uses an unknown datasource uid {other:?}"),
    }
}

/// What Grafana substitutes before a query reaches InfluxDB.
pub struct Macros {
    pub time_filter: String,
    pub interval: &'static str,
    /// The time range's ends in epoch milliseconds (`${__from}`, `${__to}`); the queries use
    /// only their difference, so `(0, length)` stands for any range of that length.
    pub range_ms: (i64, i64),
    pub vars: Vec<(String, String)>,
}

impl Macros {
    pub fn expand(&self, q: &str) -> String {
        let mut q = q
            .replace("$timeFilter", &self.time_filter)
            .replace("$__interval", self.interval)
            .replace("${__from}", &self.range_ms.0.to_string())
            .replace("${__to}", &self.range_ms.1.to_string());
        for (name, value) in &self.vars {
            q = q.replace(&format!("${name}"), value);
        }
        let unexpanded = q.match_indices('$').any(|(i, _)| {
            q[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '{')
        });
        assert!(!unexpanded, "unexpanded macro in {q}");
        q
    }
}

/// Dashboard variables set by a link's `var-NAME=VALUE` query parameters, as Grafana reads
/// them; every one must name a variable of the dashboard.
pub fn link_variables(dashboard: &Value, link: &str) -> Vec<(String, String)> {
    let names: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let query = link.split_once('?').map_or(link, |(_, q)| q);
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("var-")?.split_once('='))
        .map(|(name, value)| {
            assert!(
                names.contains(&name),
                "the link sets var-{name}, which the dashboard lacks"
            );
            (name.to_string(), value.to_string())
        })
        .collect()
}

/// (panel or variable title, datasource uid, raw query) of every query in a dashboard.
pub fn queries(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let uid_of = |v: &Value| v["datasource"]["uid"].as_str().map(str::to_string);
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for t in panel["targets"].as_array().into_iter().flatten() {
            let uid = uid_of(t)
                .or_else(|| uid_of(panel))
                .expect("panel datasource uid");
            assert_eq!(
                t["rawQuery"], true,
                "panel {title}: queries are raw InfluxQL"
            );
            out.push((title.clone(), uid, t["query"].as_str().unwrap().to_string()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["query"]
                .as_str()
                .or_else(|| v["query"]["query"].as_str())
                .expect("variable query");
            out.push((
                format!("variable {}", v["name"]),
                uid_of(v).expect("variable datasource uid"),
                q.to_string(),
            ));
        }
    }
    out
}

pub fn has_values(answer: &Value) -> bool {
    answer["results"][0]["series"]
        .as_array()
        .is_some_and(|series| {
            series.iter().any(|s| {
                s["values"].as_array().is_some_and(|rows| {
                    rows.iter().any(|r| {
                        r.as_array()
                            .is_some_and(|c| c.iter().skip(1).any(|x| !x.is_null()))
                    })
                })
            })
        })
}
