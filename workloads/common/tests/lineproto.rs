//! Line protocol against a real InfluxDB: every string, whatever it holds, gives lines InfluxDB
//! accepts, and each reads back as the sanitized value (the expectations below restate the
//! rules of `iot_common::lineproto` independently).

use std::collections::BTreeMap;

use iot_common::{InfluxArgs, InfluxClient, Line};
use iot_testkit::influx::InfluxServer;
use serde_json::Value;

/// Every character class that line protocol treats specially, and some it should not.
const CLASSES: &[&str] = &[
    " ", ",", "=", "\"", "'", "\\", "\n", "\r", "\t", "\0", "\x01", "\x7f", "#", "é", "✓", "🌡",
];

/// Each class alone, doubled, at the start, in the middle and at the end; every ordered pair of
/// classes at the start, at the end and around a letter; and a few whole words.
fn hostile_strings() -> Vec<String> {
    let mut out: Vec<String> = ["", "plain", "time", "trailing\\", "Radiation Si22G"]
        .map(String::from)
        .to_vec();
    for c in CLASSES {
        out.extend([
            c.to_string(),
            format!("{c}{c}"),
            format!("{c}x"),
            format!("x{c}y"),
            format!("x{c}"),
            format!("x{c}{c}"),
        ]);
        for d in CLASSES {
            out.extend([format!("{c}{d}x"), format!("x{c}{d}"), format!("{c}x{d}")]);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What a string is stored as: control characters become spaces, and a run of backslashes goes
/// when it ends the string or, where `strict` (measurements and field keys), when it stands
/// before a space, comma, `=`, `"` or control character.
fn stored(s: &str, strict: bool) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars() {
        if c == '\\' {
            run.push(c);
            continue;
        }
        let escape_like = c.is_ascii_control() || ",= \"".contains(c);
        if !(strict && escape_like) {
            out.push_str(&run);
        }
        run.clear();
        out.push(if c.is_ascii_control() { ' ' } else { c });
    }
    out
}

fn stored_tag(s: &str) -> String {
    stored(s, false)
}

fn time_renamed(key: String) -> String {
    if key == "time" { "time_".into() } else { key }
}

fn stored_measurement(s: &str) -> String {
    let name = stored(s, true);
    match name.strip_prefix('#') {
        Some(rest) => format!("_{rest}"),
        None => name,
    }
}

struct Db {
    influx: InfluxServer,
    client: InfluxClient,
}

const DB: &str = "lineproto";

impl Db {
    async fn start() -> Self {
        let influx = InfluxServer::start().await;
        let args = InfluxArgs {
            influx_url: influx.url(),
            influx_username: String::new(),
            influx_password: String::new(),
            influx_timeout_ms: 30_000,
        };
        let client = InfluxClient::new(&args, DB).expect("client");
        client.create_database().await.expect("create database");
        Db { influx, client }
    }

    /// Writes one line per string, built by `line` (which gets the string's index as the `i`
    /// field and the timestamp); returns which strings gave a line. InfluxDB must accept all.
    async fn write(
        &self,
        strings: &[String],
        line: impl for<'b> Fn(Line<'b>, &str, i64) -> Line<'b>,
        measurement: impl Fn(&str) -> &str,
    ) -> Vec<bool> {
        let mut body = String::new();
        let written: Vec<bool> = (0_i64..)
            .zip(strings)
            .map(|(i, s)| line(Line::new(&mut body, measurement(s)), s, i).finish(i))
            .collect();
        if let Err(e) = self.client.write(body.clone()).await {
            panic!("InfluxDB refused the batch: {e}\n{body}");
        }
        written
    }

    /// Every row of `q` (all series) as column → value, with the series name as `_name`.
    async fn rows(&self, q: &str) -> Vec<BTreeMap<String, Value>> {
        let answer = self.influx.query(DB, q).await;
        let mut out = Vec::new();
        for series in answer["results"][0]["series"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let columns: Vec<String> = series["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| c.as_str().expect("column name").to_string())
                .collect();
            for row in series["values"].as_array().expect("values") {
                let mut map: BTreeMap<String, Value> = columns
                    .iter()
                    .cloned()
                    .zip(row.as_array().expect("row").iter().cloned())
                    .collect();
                map.insert("_name".into(), series["name"].clone());
                out.push(map);
            }
        }
        out
    }

    /// The rows of `q` by their `i` field.
    async fn by_index(&self, q: &str) -> BTreeMap<usize, BTreeMap<String, Value>> {
        self.rows(q)
            .await
            .into_iter()
            .map(|row| (row["i"].as_u64().expect("i") as usize, row))
            .collect()
    }
}

/// Reports every string whose stored value is not the expected one.
fn assert_all(strings: &[String], mismatch: impl Fn(usize, &str) -> Option<String>) {
    let wrong: Vec<String> = strings
        .iter()
        .enumerate()
        .filter_map(|(i, s)| mismatch(i, s).map(|m| format!("{s:?}: {m}")))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        strings.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn every_string_as_a_tag_value_reads_back_sanitized() {
    let db = Db::start().await;
    let strings = hostile_strings();
    db.write(
        &strings,
        |l, s, i| l.tag("k", s).field_i64("i", i),
        |_| "tag_values",
    )
    .await;
    let rows = db.by_index("SELECT i, k FROM tag_values").await;
    assert_eq!(rows.len(), strings.len());
    assert_all(&strings, |i, s| {
        let want = Some(stored_tag(s)).filter(|v| !v.is_empty());
        let got = rows[&i]["k"].as_str().map(String::from);
        (got != want).then(|| format!("stored as {got:?}, want {want:?}"))
    });
}

/// The columns a key gives: none when it sanitized to nothing (the tag or field is skipped).
fn key_columns(key: String) -> Vec<String> {
    if key.is_empty() { vec![] } else { vec![key] }
}

/// The columns of a row that hold `value` (the column of the key under test).
fn columns_with(row: &BTreeMap<String, Value>, value: &Value) -> Vec<String> {
    let keys = row
        .iter()
        .filter(|(k, v)| *v == value && *k != "i" && *k != "time");
    keys.map(|(k, _)| k.clone()).collect()
}

#[tokio::test]
async fn every_string_as_a_tag_key_reads_back_sanitized() {
    let db = Db::start().await;
    let strings = hostile_strings();
    db.write(
        &strings,
        |l, s, i| l.tag(s, "v").field_i64("i", i),
        |_| "tag_keys",
    )
    .await;
    let rows = db.by_index("SELECT * FROM tag_keys").await;
    assert_eq!(rows.len(), strings.len());
    assert_all(&strings, |i, s| {
        let want = key_columns(time_renamed(stored_tag(s)));
        let got = columns_with(&rows[&i], &Value::from("v"));
        (got != want).then(|| format!("stored as {got:?}, want {want:?}"))
    });
}

#[tokio::test]
async fn every_string_as_a_field_key_reads_back_sanitized() {
    let db = Db::start().await;
    let strings = hostile_strings();
    db.write(
        &strings,
        |l, s, i| l.field_i64("i", i).field_i64(s, -1),
        |_| "field_keys",
    )
    .await;
    let rows = db.by_index("SELECT * FROM field_keys").await;
    assert_eq!(rows.len(), strings.len());
    assert_all(&strings, |i, s| {
        let want = key_columns(time_renamed(stored(s, true)));
        let got = columns_with(&rows[&i], &Value::from(-1));
        (got != want).then(|| format!("stored as {got:?}, want {want:?}"))
    });
}

#[tokio::test]
async fn every_string_as_a_string_field_reads_back_exactly() {
    let db = Db::start().await;
    let strings = hostile_strings();
    db.write(
        &strings,
        |l, s, i| l.field_i64("i", i).field_str("s", s),
        |_| "strings",
    )
    .await;
    let rows = db.by_index("SELECT i, s FROM strings").await;
    assert_eq!(rows.len(), strings.len());
    assert_all(&strings, |i, s| {
        let got = rows[&i]["s"].as_str();
        (got != Some(s)).then(|| format!("stored as {got:?}"))
    });
}

#[tokio::test]
async fn every_string_as_a_measurement_reads_back_sanitized() {
    let db = Db::start().await;
    let strings = hostile_strings();
    let written = db
        .write(&strings, |l, _, i| l.field_i64("i", i), |s| s)
        .await;
    let rows = db.by_index("SELECT i FROM /.*/").await;
    assert_all(&strings, |i, s| {
        let want = Some(stored_measurement(s)).filter(|m| !m.is_empty());
        if written[i] != want.is_some() {
            return Some(format!("written: {}, want {want:?}", written[i]));
        }
        let got = rows
            .get(&i)
            .and_then(|r| r["_name"].as_str().map(String::from));
        (got != want).then(|| format!("stored as {got:?}, want {want:?}"))
    });
    assert_eq!(rows.len(), written.iter().filter(|w| **w).count());
}
