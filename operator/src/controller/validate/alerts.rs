//! `spec.alerts` resolved: thresholds in the units the rules use, contact points whose Secrets
//! exist with their keys, and the user's rule files checked against Grafana's schema.

use std::collections::BTreeSet;

use super::alerting_schema::{Allowed, check_file};
use super::invalid::InvalidSpec;
use super::model::{Alerts, ContactPoint, ContactPointKind, RuleDuration, Smtp, UserRuleFile};
use crate::constants::{AQI_DATASOURCE_UID, DHT_DATASOURCE_UID};
use crate::controller::dereference::{Dereferenced, ReferencedSecret};
use crate::crd::{AlertsSpec, ContactPointSpec, RangeSpec, SecretKeyRef, SmtpSpec};

/// Built-in rules' uids begin with this; the user's may not, so the two never collide.
pub const BUILT_IN_UID_PREFIX: &str = "iot-";

/// `namespace` is the monitor's, named in the `kubectl label` command of a Secret that has not
/// opted in.
pub(super) fn resolve(
    spec: &AlertsSpec,
    refs: &Dereferenced,
    namespace: &str,
) -> Result<Alerts, InvalidSpec> {
    let mut names = BTreeSet::new();
    let mut contact_points = Vec::with_capacity(spec.contact_points.len());
    for point in &spec.contact_points {
        if !names.insert(point.name.as_str()) {
            return Err(InvalidSpec::DuplicateContactPoint {
                name: point.name.clone(),
            });
        }
        contact_points.push(resolve_contact_point(point, refs, namespace)?);
    }
    let smtp = spec
        .smtp
        .as_ref()
        .map(|smtp| resolve_smtp(smtp, refs, namespace))
        .transpose()?;
    if smtp.is_none()
        && let Some(point) = spec.contact_points.iter().find(|c| c.email.is_some())
    {
        return Err(InvalidSpec::EmailWithoutSmtp {
            name: point.name.clone(),
        });
    }
    Ok(Alerts {
        silent_after: duration("silentAfter", &spec.silent_after)?,
        stuck_after: duration("stuckAfter", &spec.stuck_after)?,
        aqi_stale_after: duration("aqiStaleAfter", &spec.aqi_stale_after)?,
        temperature: range("temperature", spec.temperature)?,
        humidity: range("humidity", spec.humidity)?,
        aqi_band: spec.aqi_band,
        ingest_failure_percent: spec.ingest_failure_percent,
        contact_points,
        smtp,
        user_rules: user_rules(refs)?,
    })
}

/// `^[1-9][0-9]{0,4}(s|m|h)$`, the CRD's rule, for objects the API server did not check.
fn duration(field: &'static str, value: &str) -> Result<RuleDuration, InvalidSpec> {
    let bad = || InvalidSpec::BadAlertDuration {
        field,
        value: value.to_owned(),
    };
    let split = value.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = value.split_at(split);
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    if number.is_empty() || number.len() > 5 || number.starts_with('0') {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(RuleDuration {
        text: value.to_owned(),
        seconds: n * unit,
    })
}

fn range(field: &'static str, r: RangeSpec) -> Result<(f64, f64), InvalidSpec> {
    // Also refuses NaN, which no comparison lets through.
    if r.min < r.max {
        Ok((r.min, r.max))
    } else {
        Err(InvalidSpec::AlertRangeCrossed { field })
    }
}

fn resolve_contact_point(
    point: &ContactPointSpec,
    refs: &Dereferenced,
    namespace: &str,
) -> Result<ContactPoint, InvalidSpec> {
    let named_by = format!("alerts.contactPoints entry {:?}", point.name);
    let kind = match (&point.email, &point.webhook, &point.slack) {
        (Some(email), None, None) => ContactPointKind::Email {
            addresses: email.addresses.clone(),
        },
        (None, Some(webhook), None) => ContactPointKind::Webhook {
            url: secret_key(&named_by, &webhook.url_secret, refs, namespace)?,
            port: webhook.port,
        },
        (None, None, Some(slack)) => ContactPointKind::Slack {
            url: secret_key(&named_by, &slack.url_secret, refs, namespace)?,
            recipient: slack.recipient.clone(),
        },
        _ => {
            return Err(InvalidSpec::ContactPointTargets {
                name: point.name.clone(),
            });
        }
    };
    Ok(ContactPoint {
        name: point.name.clone(),
        kind,
    })
}

fn resolve_smtp(
    spec: &SmtpSpec,
    refs: &Dereferenced,
    namespace: &str,
) -> Result<Smtp, InvalidSpec> {
    let login = match &spec.credentials_secret {
        None => None,
        Some(secret) => {
            let key = |key: &str| SecretKeyRef {
                name: secret.clone(),
                key: key.to_owned(),
            };
            let user = secret_key("alerts.smtp", &key(&spec.user_key), refs, namespace)?;
            let password = secret_key("alerts.smtp", &key(&spec.password_key), refs, namespace)?;
            if let Some(ReferencedSecret::OptedIn {
                url: Some(allowed), ..
            }) = refs.contact_point_secrets.get(secret)
                && !allowed.trim().eq_ignore_ascii_case(&spec.host)
            {
                return Err(InvalidSpec::SmtpHostNotAllowed {
                    secret: secret.clone(),
                    allowed: allowed.trim().to_owned(),
                    host: spec.host.clone(),
                });
            }
            Some((user, password))
        }
    };
    Ok(Smtp {
        host: spec.host.clone(),
        from_address: spec.from_address.clone(),
        login,
    })
}

/// The Secret must exist, opt in ([`crate::constants::ALERTING_SECRET_LABEL`]) and hold the
/// key: Grafana would otherwise send a Secret its owner never meant for this to a host the spec
/// names, or start with an empty URL, or not at all (a missing Secret keeps its pod from
/// starting).
fn secret_key(
    named_by: &str,
    reference: &SecretKeyRef,
    refs: &Dereferenced,
    namespace: &str,
) -> Result<SecretKeyRef, InvalidSpec> {
    match refs.contact_point_secrets.get(&reference.name) {
        Some(ReferencedSecret::OptedIn { keys, .. }) if keys.contains(&reference.key) => {
            Ok(reference.clone())
        }
        Some(ReferencedSecret::OptedIn { .. }) => Err(InvalidSpec::ContactPointKeyMissing {
            named_by: named_by.to_owned(),
            secret: reference.name.clone(),
            key: reference.key.clone(),
        }),
        Some(ReferencedSecret::NotOptedIn) => Err(InvalidSpec::ContactPointSecretNotOptedIn {
            named_by: named_by.to_owned(),
            secret: reference.name.clone(),
            namespace: namespace.to_owned(),
        }),
        // Not read means not found: never build a pod on a Secret nobody has seen.
        Some(ReferencedSecret::Missing) | None => Err(InvalidSpec::ContactPointSecretMissing {
            named_by: named_by.to_owned(),
            secret: reference.name.clone(),
        }),
    }
}

/// Every key of the labelled ConfigMaps, parsed and checked: rule groups only, queries naming
/// the provisioned datasources, uids unique and outside the built-in prefix.
fn user_rules(refs: &Dereferenced) -> Result<Vec<UserRuleFile>, InvalidSpec> {
    let mut files = Vec::new();
    let mut uids = BTreeSet::new();
    for (config_map, data) in &refs.alert_rule_config_maps {
        for (key, content) in data {
            let bad = |reason: String| InvalidSpec::BadRuleFile {
                config_map: config_map.clone(),
                key: key.clone(),
                reason,
            };
            if ![".yaml", ".yml", ".json"].iter().any(|e| key.ends_with(e)) {
                return Err(bad(
                    "Grafana reads only files ending in .yaml, .yml or .json".into(),
                ));
            }
            let doc: serde_json::Value =
                serde_yaml::from_str(content).map_err(|e| bad(format!("not YAML: {e}")))?;
            let datasources = [DHT_DATASOURCE_UID, AQI_DATASOURCE_UID];
            for uid in check_file(&doc, Allowed::RuleGroups, &datasources).map_err(bad)? {
                if uid.starts_with(BUILT_IN_UID_PREFIX) {
                    return Err(bad(format!(
                        "rule uid {uid:?}: uids beginning with {BUILT_IN_UID_PREFIX:?} are the built-in rules'"
                    )));
                }
                if !uids.insert(uid.clone()) {
                    return Err(bad(format!(
                        "rule uid {uid:?} is also used in another labelled file"
                    )));
                }
            }
            files.push(UserRuleFile {
                config_map: config_map.clone(),
                key: key.clone(),
                content: content.clone(),
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn spec(yaml: &str) -> AlertsSpec {
        serde_yaml::from_str(yaml).expect("alerts yaml")
    }

    const HOOK: &str =
        "contactPoints: [{name: ops, webhook: {urlSecret: {name: hooks, key: ops}}}]";

    fn resolve_in(spec: &AlertsSpec, refs: &Dereferenced) -> Result<Alerts, InvalidSpec> {
        resolve(spec, refs, "iot")
    }

    fn opted_in(keys: BTreeSet<String>) -> ReferencedSecret {
        ReferencedSecret::OptedIn { keys, url: None }
    }

    fn with_secret(keys: &[&str]) -> Dereferenced {
        let keys = keys.iter().map(|k| (*k).to_owned()).collect();
        Dereferenced {
            contact_point_secrets: BTreeMap::from([("hooks".into(), opted_in(keys))]),
            ..Dereferenced::default()
        }
    }

    #[test]
    fn defaults_resolve_to_the_issues_thresholds() {
        let a = resolve_in(&AlertsSpec::default(), &Dereferenced::default()).expect("valid");
        assert_eq!(a.silent_after.seconds, 600);
        assert_eq!(a.stuck_after.seconds, 1800);
        assert_eq!(a.aqi_stale_after.seconds, 3600);
        assert_eq!((a.temperature, a.humidity), ((-40.0, 80.0), (0.0, 100.0)));
        assert_eq!(a.aqi_band, 7);
    }

    #[test]
    fn bad_durations_and_crossed_ranges_are_named() {
        for bad in ["0m", "10", "1d", "m", "010m", "123456s"] {
            let err = resolve_in(
                &spec(&format!("silentAfter: {bad}")),
                &Dereferenced::default(),
            );
            assert!(
                matches!(
                    err,
                    Err(InvalidSpec::BadAlertDuration {
                        field: "silentAfter",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let err = resolve_in(
            &spec("humidity: {min: 50, max: 10}"),
            &Dereferenced::default(),
        );
        assert_eq!(
            err,
            Err(InvalidSpec::AlertRangeCrossed { field: "humidity" })
        );
    }

    #[test]
    fn a_contact_point_needs_its_secret_and_key() {
        let s = spec(HOOK);
        let missing = resolve_in(&s, &Dereferenced::default()).expect_err("no Secret");
        assert_eq!(
            missing,
            InvalidSpec::ContactPointSecretMissing {
                named_by: "alerts.contactPoints entry \"ops\"".into(),
                secret: "hooks".into()
            }
        );
        assert_eq!(missing.category(), "MissingCredentials");
        let no_key = resolve_in(&s, &with_secret(&["other"])).expect_err("no key");
        assert!(matches!(no_key, InvalidSpec::ContactPointKeyMissing { key, .. } if key == "ops"));
        let ok = resolve_in(&s, &with_secret(&["ops"])).expect("resolved");
        assert_eq!(ok.contact_points.len(), 1);
    }

    #[test]
    fn a_contact_point_secret_that_has_not_opted_in_is_refused_with_the_label_command() {
        let refs = Dereferenced {
            contact_point_secrets: BTreeMap::from([("hooks".into(), ReferencedSecret::NotOptedIn)]),
            ..Dereferenced::default()
        };
        let err = resolve_in(&spec(HOOK), &refs).expect_err("not opted in");
        assert_eq!(
            err,
            InvalidSpec::ContactPointSecretNotOptedIn {
                named_by: "alerts.contactPoints entry \"ops\"".into(),
                secret: "hooks".into(),
                namespace: "iot".into(),
            }
        );
        assert_eq!(err.category(), "CredentialsNotAllowed");
        assert_eq!(err.withdrawn_secret(), Some("hooks"));
        assert!(
            err.to_string()
                .contains("kubectl label secret hooks -n iot iot.operator.dev/allow-alerting=true"),
            "{err}"
        );
    }

    #[test]
    fn an_smtp_login_secret_that_has_not_opted_in_is_refused() {
        let with_smtp = spec(
            "contactPoints: [{name: m, email: {addresses: [a@b.c]}}]\nsmtp: {host: 'mx.example.org:25', fromAddress: a@b.c, credentialsSecret: mail}",
        );
        let refs = Dereferenced {
            contact_point_secrets: BTreeMap::from([("mail".into(), ReferencedSecret::NotOptedIn)]),
            ..Dereferenced::default()
        };
        let err = resolve_in(&with_smtp, &refs).expect_err("not opted in");
        assert!(
            matches!(&err, InvalidSpec::ContactPointSecretNotOptedIn { named_by, secret, .. }
                if named_by == "alerts.smtp" && secret == "mail"),
            "{err:?}"
        );
    }

    #[test]
    fn email_needs_a_mail_server_whose_login_exists() {
        let mail = "contactPoints: [{name: m, email: {addresses: [a@b.c]}}]";
        assert!(matches!(
            resolve_in(&spec(mail), &Dereferenced::default()),
            Err(InvalidSpec::EmailWithoutSmtp { .. })
        ));
        let with_smtp = spec(&format!(
            "{mail}\nsmtp: {{host: 'mx.example.org:25', fromAddress: a@b.c, credentialsSecret: mail}}"
        ));
        let err = resolve_in(&with_smtp, &Dereferenced::default()).expect_err("no Secret");
        assert!(err.to_string().contains("alerts.smtp"), "{err}");
        let refs = Dereferenced {
            contact_point_secrets: BTreeMap::from([(
                "mail".into(),
                opted_in(BTreeSet::from(["username".into(), "password".into()])),
            )]),
            ..Dereferenced::default()
        };
        let ok = resolve_in(&with_smtp, &refs).expect("resolved");
        assert!(ok.smtp.and_then(|s| s.login).is_some());
    }

    #[test]
    fn an_smtp_login_goes_only_to_the_mail_server_its_secret_names() {
        let with_smtp = |host: &str| {
            spec(&format!(
                "contactPoints: [{{name: m, email: {{addresses: [a@b.c]}}}}]\nsmtp: {{host: '{host}', fromAddress: a@b.c, credentialsSecret: mail}}"
            ))
        };
        let refs = Dereferenced {
            contact_point_secrets: BTreeMap::from([(
                "mail".into(),
                ReferencedSecret::OptedIn {
                    keys: BTreeSet::from(["username".into(), "password".into()]),
                    url: Some("MX.example.org:587".into()),
                },
            )]),
            ..Dereferenced::default()
        };
        // Host names compare without case.
        assert!(resolve_in(&with_smtp("mx.example.org:587"), &refs).is_ok());
        for elsewhere in ["mx.example.org:25", "attacker.example:587"] {
            let err = resolve_in(&with_smtp(elsewhere), &refs).expect_err("pinned elsewhere");
            assert_eq!(err.category(), "CredentialsNotAllowed");
            assert_eq!(err.withdrawn_secret(), Some("mail"));
            let text = err.to_string();
            assert!(
                text.contains("only to the mail server MX.example.org:587")
                    && text.contains(elsewhere)
                    && text.contains("iot.operator.dev/smtp-host"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_contact_point_has_exactly_one_target_and_a_unique_name() {
        let both = spec(
            "contactPoints: [{name: x, email: {addresses: [a@b.c]}, webhook: {urlSecret: {name: hooks, key: ops}}}]\nsmtp: {host: 'mx:25', fromAddress: a@b.c}",
        );
        assert!(matches!(
            resolve_in(&both, &with_secret(&["ops"])),
            Err(InvalidSpec::ContactPointTargets { .. })
        ));
        let twice = spec(
            "contactPoints: [{name: x, email: {addresses: [a@b.c]}}, {name: x, email: {addresses: [d@e.f]}}]\nsmtp: {host: 'mx:25', fromAddress: a@b.c}",
        );
        assert!(matches!(
            resolve_in(&twice, &Dereferenced::default()),
            Err(InvalidSpec::DuplicateContactPoint { .. })
        ));
    }

    fn with_rules(files: &[(&str, &str)]) -> Dereferenced {
        let data = files
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Dereferenced {
            alert_rule_config_maps: BTreeMap::from([("team-rules".into(), data)]),
            ..Dereferenced::default()
        }
    }

    const USER_RULES: &str = r#"
apiVersion: 1
groups:
  - orgId: 1
    name: kitchen
    folder: Team
    interval: 1m
    rules:
      - uid: kitchen-hot
        title: Kitchen hot
        condition: A
        data:
          - refId: A
            datasourceUid: iot-dht
            relativeTimeRange: {from: 600, to: 0}
            model: {query: "SELECT last(value) FROM temperature WHERE place = 'kitchen'"}
        noDataState: OK
        execErrState: Error
        for: 5m
"#;

    #[test]
    fn labelled_rule_files_are_checked_and_kept() {
        let a = resolve_in(
            &AlertsSpec::default(),
            &with_rules(&[("kitchen.yaml", USER_RULES)]),
        )
        .expect("valid");
        let uids: BTreeSet<_> = a.user_rules.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(uids, BTreeSet::from(["kitchen.yaml"]));
    }

    #[test]
    fn a_bad_rule_file_is_refused_with_its_field() {
        let cases = [
            ("notes.txt", USER_RULES, "only files ending"),
            ("k.yaml", "groups: [", "not YAML"),
            (
                "k.yaml",
                &USER_RULES.replace("iot-dht", "prometheus"),
                "datasourceUid",
            ),
            (
                "k.yaml",
                &USER_RULES.replace("uid: kitchen-hot", "uid: iot-sensor-silent"),
                "built-in",
            ),
        ];
        for (key, content, says) in cases {
            let err = resolve_in(&AlertsSpec::default(), &with_rules(&[(key, content)]))
                .expect_err("refused");
            assert_eq!(err.category(), "InvalidAlertRules");
            assert!(err.to_string().contains(says), "{key}: {err}");
        }
        let twice = with_rules(&[("a.yaml", USER_RULES), ("b.yaml", USER_RULES)]);
        let err = resolve_in(&AlertsSpec::default(), &twice).expect_err("uid twice");
        assert!(err.to_string().contains("another labelled file"), "{err}");
    }
}
