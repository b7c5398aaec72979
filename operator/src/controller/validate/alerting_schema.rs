//! Grafana's file-provisioned alerting schema (apiVersion 1), field by field as Grafana's
//! documentation lists it ("Use configuration files to provision alerting resources"): the
//! check the operator runs on the rule files users hand it, and the tests on its own files.
//! Grafana refuses to start on a provisioning file it cannot read, so a file is checked before
//! it reaches a pod.

use std::collections::BTreeSet;

use serde_json::Value;

/// The uid of Grafana's server-side expressions (reduce, math, threshold).
pub const EXPRESSION_UID: &str = "__expr__";

/// What a file may hold besides `apiVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// Rule groups only: the user's files (contact points and the policy come from the spec).
    RuleGroups,
    /// Contact points and the notification policy only: the operator's own file of them.
    Notifications,
}

/// Checks one provisioning file; returns the uids of its rules. `datasources` are the uids a
/// query may name (expressions name [`EXPRESSION_UID`]). The error names the field.
pub fn check_file(
    doc: &Value,
    allowed: Allowed,
    datasources: &[&str],
) -> Result<BTreeSet<String>, String> {
    let top = object(doc, "the file")?;
    if top.get("apiVersion").and_then(Value::as_i64) != Some(1) {
        return Err("apiVersion must be 1".into());
    }
    let keys: &[&str] = match allowed {
        Allowed::RuleGroups => &["apiVersion", "groups"],
        Allowed::Notifications => &["apiVersion", "contactPoints", "policies"],
    };
    if let Some(extra) = top.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!(
            "{extra}: not allowed here (allowed: {})",
            keys.join(", ")
        ));
    }
    let mut uids = BTreeSet::new();
    if let Some(groups) = top.get("groups") {
        for (g, group) in array(groups, "groups")?.iter().enumerate() {
            check_group(group, &format!("groups[{g}]"), datasources, &mut uids)?;
        }
    }
    let mut receivers = BTreeSet::new();
    if let Some(points) = top.get("contactPoints") {
        for (c, point) in array(points, "contactPoints")?.iter().enumerate() {
            let path = format!("contactPoints[{c}]");
            let point = object(point, &path)?;
            integer(point.get("orgId"), &format!("{path}.orgId"))?;
            receivers.insert(string(point.get("name"), &format!("{path}.name"))?.to_owned());
            let list = point.get("receivers").unwrap_or(&Value::Null);
            for (r, receiver) in array(list, &format!("{path}.receivers"))?
                .iter()
                .enumerate()
            {
                check_receiver(receiver, &format!("{path}.receivers[{r}]"))?;
            }
        }
    }
    if let Some(policies) = top.get("policies") {
        for (p, policy) in array(policies, "policies")?.iter().enumerate() {
            let path = format!("policies[{p}]");
            integer(
                object(policy, &path)?.get("orgId"),
                &format!("{path}.orgId"),
            )?;
            check_route(policy, &path, &receivers)?;
        }
    }
    Ok(uids)
}

fn check_group(
    group: &Value,
    path: &str,
    datasources: &[&str],
    uids: &mut BTreeSet<String>,
) -> Result<(), String> {
    let g = object(group, path)?;
    integer(g.get("orgId"), &format!("{path}.orgId"))?;
    string(g.get("name"), &format!("{path}.name"))?;
    string(g.get("folder"), &format!("{path}.folder"))?;
    duration(g.get("interval"), &format!("{path}.interval"))?;
    let rules = array(
        g.get("rules").unwrap_or(&Value::Null),
        &format!("{path}.rules"),
    )?;
    if rules.is_empty() {
        return Err(format!("{path}.rules: a group needs at least one rule"));
    }
    for (r, rule) in rules.iter().enumerate() {
        let path = format!("{path}.rules[{r}]");
        let uid = check_rule(rule, &path, datasources)?;
        if !uids.insert(uid.clone()) {
            return Err(format!("{path}.uid: {uid:?} is used twice"));
        }
    }
    Ok(())
}

fn check_rule(rule: &Value, path: &str, datasources: &[&str]) -> Result<String, String> {
    let r = object(rule, path)?;
    let uid = string(r.get("uid"), &format!("{path}.uid"))?;
    if uid.len() > 40
        || !uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{path}.uid: {uid:?} must be at most 40 of A-Z, a-z, 0-9, '-' and '_'"
        ));
    }
    string(r.get("title"), &format!("{path}.title"))?;
    let condition = string(r.get("condition"), &format!("{path}.condition"))?;
    let data = array(
        r.get("data").unwrap_or(&Value::Null),
        &format!("{path}.data"),
    )?;
    let mut ref_ids = BTreeSet::new();
    for (d, query) in data.iter().enumerate() {
        let path = format!("{path}.data[{d}]");
        let q = object(query, &path)?;
        ref_ids.insert(string(q.get("refId"), &format!("{path}.refId"))?);
        let source = string(q.get("datasourceUid"), &format!("{path}.datasourceUid"))?;
        if source != EXPRESSION_UID {
            if !datasources.contains(&source) {
                return Err(format!(
                    "{path}.datasourceUid: {source:?} is not a provisioned datasource ({}) or {EXPRESSION_UID}",
                    datasources.join(", ")
                ));
            }
            let range = object(
                q.get("relativeTimeRange").unwrap_or(&Value::Null),
                &format!("{path}.relativeTimeRange"),
            )?;
            let from = integer(range.get("from"), &format!("{path}.relativeTimeRange.from"))?;
            let to = integer(range.get("to"), &format!("{path}.relativeTimeRange.to"))?;
            if from <= to {
                return Err(format!(
                    "{path}.relativeTimeRange: from ({from} s ago) must be before to ({to} s ago)"
                ));
            }
        }
        object(
            q.get("model").unwrap_or(&Value::Null),
            &format!("{path}.model"),
        )?;
    }
    if !ref_ids.contains(condition) {
        return Err(format!(
            "{path}.condition: {condition:?} is not the refId of one of its data"
        ));
    }
    one_of(
        r.get("noDataState"),
        &format!("{path}.noDataState"),
        &["Alerting", "NoData", "OK"],
    )?;
    one_of(
        r.get("execErrState"),
        &format!("{path}.execErrState"),
        &["Alerting", "Error", "OK"],
    )?;
    duration(r.get("for"), &format!("{path}.for"))?;
    for field in ["annotations", "labels"] {
        if let Some(map) = r.get(field) {
            let map = object(map, &format!("{path}.{field}"))?;
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(format!("{path}.{field}.{k}: must be a string"));
            }
        }
    }
    Ok(uid.to_owned())
}

fn check_receiver(receiver: &Value, path: &str) -> Result<(), String> {
    let r = object(receiver, path)?;
    string(r.get("uid"), &format!("{path}.uid"))?;
    let kind = one_of(
        r.get("type"),
        &format!("{path}.type"),
        &["email", "webhook", "slack"],
    )?;
    let settings = object(
        r.get("settings").unwrap_or(&Value::Null),
        &format!("{path}.settings"),
    )?;
    let required = match kind {
        "email" => "addresses",
        _ => "url",
    };
    string(
        settings.get(required),
        &format!("{path}.settings.{required}"),
    )?;
    Ok(())
}

fn check_route(route: &Value, path: &str, receivers: &BTreeSet<String>) -> Result<(), String> {
    let r = object(route, path)?;
    let receiver = string(r.get("receiver"), &format!("{path}.receiver"))?;
    if !receivers.contains(receiver) {
        return Err(format!(
            "{path}.receiver: {receiver:?} is not a contact point of this file"
        ));
    }
    for field in ["group_wait", "group_interval", "repeat_interval"] {
        if r.contains_key(field) {
            duration(r.get(field), &format!("{path}.{field}"))?;
        }
    }
    if let Some(routes) = r.get("routes") {
        for (i, child) in array(routes, &format!("{path}.routes"))?.iter().enumerate() {
            check_route(child, &format!("{path}.routes[{i}]"), receivers)?;
        }
    }
    Ok(())
}

type Map = serde_json::Map<String, Value>;

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map, String> {
    v.as_object()
        .ok_or_else(|| format!("{path}: must be a mapping"))
}

fn array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("{path}: must be a list"))
}

fn string<'a>(v: Option<&'a Value>, path: &str) -> Result<&'a str, String> {
    match v.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(format!("{path}: must be a non-empty string")),
    }
}

fn integer(v: Option<&Value>, path: &str) -> Result<i64, String> {
    v.and_then(Value::as_i64)
        .ok_or_else(|| format!("{path}: must be an integer"))
}

fn one_of<'a>(v: Option<&'a Value>, path: &str, values: &[&str]) -> Result<&'a str, String> {
    let s = string(v, path)?;
    if values.contains(&s) {
        Ok(s)
    } else {
        Err(format!("{path}: {s:?} is not one of {}", values.join(", ")))
    }
}

/// A duration as Grafana reads it: whole numbers with units, such as `1m`, `90s` or `1h30m`.
fn duration(v: Option<&Value>, path: &str) -> Result<(), String> {
    let s = string(v, path)?;
    if parse_duration(s).is_some() {
        Ok(())
    } else {
        Err(format!(
            "{path}: {s:?} is not a duration such as 30s, 5m or 1h"
        ))
    }
}

/// Seconds of a duration of whole numbers with units `s`, `m`, `h`, `d` or `w` (`1h30m`).
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in s.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(digit.into())?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    (number.is_none() && !s.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_grafana_reads_them() {
        assert_eq!(parse_duration("10m"), Some(600));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("0s"), Some(0));
        for bad in ["", "10", "m", "1.5h", "10 m", "5y"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn rule_file(datasource: &str, condition: &str) -> Value {
        serde_json::json!({
            "apiVersion": 1,
            "groups": [{"orgId": 1, "name": "mine", "folder": "IoT", "interval": "1m", "rules": [{
                "uid": "my-rule", "title": "Mine", "condition": condition,
                "data": [{"refId": "A", "datasourceUid": datasource,
                          "relativeTimeRange": {"from": 600, "to": 0}, "model": {"query": "SELECT 1"}}],
                "noDataState": "OK", "execErrState": "Error", "for": "5m",
                "annotations": {"summary": "x"}, "labels": {"team": "a"}
            }]}]
        })
    }

    #[test]
    fn a_complete_rule_file_passes_and_gives_its_uids() {
        let uids = check_file(
            &rule_file("iot-dht", "A"),
            Allowed::RuleGroups,
            &["iot-dht"],
        );
        assert_eq!(uids, Ok(BTreeSet::from(["my-rule".to_owned()])));
    }

    #[test]
    fn each_fault_is_named_by_its_field() {
        let ds = &["iot-dht"];
        let err = |doc: &Value| check_file(doc, Allowed::RuleGroups, ds).expect_err("refused");
        assert!(err(&rule_file("prom", "A")).contains("groups[0].rules[0].data[0].datasourceUid"));
        assert!(err(&rule_file("iot-dht", "C")).contains("groups[0].rules[0].condition"));
        let mut doc = rule_file("iot-dht", "A");
        doc["groups"][0]["rules"][0]["noDataState"] = "Maybe".into();
        assert!(err(&doc).contains("noDataState"));
        let mut doc = rule_file("iot-dht", "A");
        doc["groups"][0]["interval"] = "often".into();
        assert!(err(&doc).contains("groups[0].interval"));
        let mut doc = rule_file("iot-dht", "A");
        doc["policies"] = serde_json::json!([]);
        assert!(err(&doc).contains("policies: not allowed"));
        let mut doc = rule_file("iot-dht", "A");
        doc["apiVersion"] = 2.into();
        assert!(err(&doc).contains("apiVersion"));
    }
}
