//! The load profile: what load to put on Grafana and on the CoAP server, and the thresholds
//! the run is judged by. Read from a YAML or JSON file (`--profile`), or the built-in reference
//! profile. Phases use Artillery's names (`duration`, `arrivalRate`, `pause`) so a profile and
//! an Artillery config read alike.

use std::time::Duration;

use serde::Deserialize;

/// The reference experiment's profile, built in (and documented in docs/loadtest.md).
pub const REFERENCE_YAML: &str = include_str!("reference-profile.yaml");

/// A profile that cannot be used; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not YAML or JSON, a field of the wrong type, or an unknown field.
    #[error("the profile is not valid YAML/JSON for a load profile: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A value out of its range (the message names the field).
    #[error("{0}")]
    Invalid(String),
}

/// A load profile: what each target's load does (docs/loadtest.md, "The profile file").
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `--target grafana`.
    pub grafana: GrafanaProfile,
    /// `--target coap`.
    pub coap: CoapProfile,
}

/// The Grafana users: when they arrive and what each one requests.
#[derive(Debug, Clone, PartialEq)]
pub struct GrafanaProfile {
    /// Arrivals and pauses, in order (Artillery's phases).
    pub phases: Vec<Phase>,
    /// Every user GETs each path in order, `loops` times.
    pub paths: Vec<String>,
    /// How many times each user runs through `paths`.
    pub loops: u32,
    /// Judged on the whole run's response times.
    pub thresholds: Thresholds,
}

/// The CoAP load, as sensor-sim's load mode takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CoapProfile {
    /// Readings per second over all sockets.
    pub rate: f64,
    /// Sending time.
    pub duration: Duration,
    /// UDP sockets (`--sockets`).
    pub sockets: u32,
    /// Outstanding readings per socket (`--window`).
    pub window: u32,
    /// Judged on the whole run's acknowledgement latency.
    pub thresholds: Thresholds,
}

/// Latency limits in milliseconds; a run passes a limit when the percentile is at most it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Thresholds {
    /// The 95th percentile's limit; `None` does not judge it.
    pub p95_ms: Option<f64>,
    /// The 99th percentile's limit; `None` does not judge it.
    pub p99_ms: Option<f64>,
}

/// One phase of the Grafana users' arrivals.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// `rate` new users per second for `duration`.
    Arrivals {
        /// Shown in the progress line.
        name: Option<String>,
        /// How long users keep arriving.
        duration: Duration,
        /// New users per second.
        rate: f64,
    },
    /// No new users for this long.
    Pause(Duration),
}

impl Phase {
    /// How long the phase lasts.
    pub fn duration(&self) -> Duration {
        match self {
            Self::Arrivals { duration, .. } | Self::Pause(duration) => *duration,
        }
    }
}

/// One phase as written: either `{pause}` or `{duration, arrivalRate}`, with an optional name.
/// Public so the Artillery config's phases can be read with the same rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPhase {
    /// `name`.
    pub name: Option<String>,
    /// `duration`, seconds.
    pub duration: Option<f64>,
    /// `arrivalRate`, new users per second.
    pub arrival_rate: Option<f64>,
    /// `pause`, seconds.
    pub pause: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawProfile {
    grafana: Option<RawGrafana>,
    coap: Option<RawCoap>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGrafana {
    phases: Option<Vec<RawPhase>>,
    flow: Option<RawFlow>,
    thresholds: Option<Thresholds>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFlow {
    #[serde(rename = "loop")]
    loops: Option<u32>,
    get: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCoap {
    rate: Option<f64>,
    duration_seconds: Option<f64>,
    #[serde(alias = "connections")]
    sockets: Option<u32>,
    window: Option<u32>,
    thresholds: Option<Thresholds>,
}

/// Longest run a profile may describe (one day): every load is bounded.
const MAX_SECONDS: f64 = 86_400.0;

impl Profile {
    /// The built-in reference profile.
    pub fn reference() -> Self {
        // A test parses the same text, so this cannot fail in a released binary.
        #[allow(clippy::expect_used)]
        serde_yaml::from_str(REFERENCE_YAML)
            .map_err(ProfileError::from)
            .and_then(|raw| resolve(raw, None))
            .expect("the built-in profile is valid")
    }

    /// Parses a profile. Sections and fields left out take the reference profile's values, so
    /// `coap: {rate: 5000}` is a complete profile.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let raw: RawProfile = serde_yaml::from_str(text)?;
        resolve(raw, Some(&Self::reference()))
    }
}

fn resolve(raw: RawProfile, base: Option<&Profile>) -> Result<Profile, ProfileError> {
    let missing = |what: &str| ProfileError::Invalid(format!("the profile needs {what}"));
    let g = raw.grafana.unwrap_or(RawGrafana {
        phases: None,
        flow: None,
        thresholds: None,
    });
    let phases = match g.phases {
        Some(raw) => phases(&raw)?,
        None => base
            .ok_or_else(|| missing("grafana.phases"))?
            .grafana
            .phases
            .clone(),
    };
    let flow = g.flow.unwrap_or(RawFlow {
        loops: None,
        get: None,
    });
    let paths = match flow.get {
        Some(paths) => paths,
        None => base
            .ok_or_else(|| missing("grafana.flow.get"))?
            .grafana
            .paths
            .clone(),
    };
    if paths.is_empty() || paths.iter().any(|p| !p.starts_with('/')) {
        return Err(ProfileError::Invalid(
            "grafana.flow.get needs at least one path, each starting with / (such as /dashboards)"
                .into(),
        ));
    }
    let loops = match flow.loops {
        Some(n) => n,
        None => {
            base.ok_or_else(|| missing("grafana.flow.loop"))?
                .grafana
                .loops
        }
    };
    if !(1..=100_000).contains(&loops) {
        return Err(ProfileError::Invalid(
            "grafana.flow.loop must be between 1 and 100000".into(),
        ));
    }
    let grafana = GrafanaProfile {
        phases,
        paths,
        loops,
        thresholds: g
            .thresholds
            .or(base.map(|b| b.grafana.thresholds))
            .unwrap_or_default(),
    };

    let c = raw.coap.unwrap_or(RawCoap {
        rate: None,
        duration_seconds: None,
        sockets: None,
        window: None,
        thresholds: None,
    });
    let base_coap = base.map(|b| &b.coap);
    let rate = c
        .rate
        .or(base_coap.map(|b| b.rate))
        .ok_or_else(|| missing("coap.rate"))?;
    if !(rate > 0.0 && rate <= 1e7) {
        return Err(ProfileError::Invalid(
            "coap.rate must be above 0 and at most 10000000 readings/s".into(),
        ));
    }
    let duration = match c.duration_seconds {
        Some(s) => seconds("coap.durationSeconds", s)?,
        None => {
            base_coap
                .ok_or_else(|| missing("coap.durationSeconds"))?
                .duration
        }
    };
    let sockets = c
        .sockets
        .or(base_coap.map(|b| b.sockets))
        .ok_or_else(|| missing("coap.sockets"))?;
    let window = c
        .window
        .or(base_coap.map(|b| b.window))
        .ok_or_else(|| missing("coap.window"))?;
    if !(1..=1024).contains(&sockets) || !(1..=4096).contains(&window) {
        return Err(ProfileError::Invalid(
            "coap.sockets must be 1..=1024 and coap.window 1..=4096 (sensor-sim's limits)".into(),
        ));
    }
    let coap = CoapProfile {
        rate,
        duration,
        sockets,
        window,
        thresholds: c
            .thresholds
            .or(base_coap.map(|b| b.thresholds))
            .unwrap_or_default(),
    };
    Ok(Profile { grafana, coap })
}

/// Phases as written → phases, rejecting anything ambiguous or unbounded.
pub fn phases(raw: &[RawPhase]) -> Result<Vec<Phase>, ProfileError> {
    if raw.is_empty() {
        return Err(ProfileError::Invalid(
            "grafana.phases needs at least one phase such as {duration: 60, arrivalRate: 1}".into(),
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut total = 0.0;
    for (i, p) in raw.iter().enumerate() {
        let at = format!("grafana.phases[{i}]");
        let phase = match (p.pause, p.duration, p.arrival_rate) {
            (Some(pause), None, None) => Phase::Pause(seconds(&at, pause)?),
            (None, Some(duration), Some(rate)) => {
                if !(rate > 0.0 && rate <= 10_000.0) {
                    return Err(ProfileError::Invalid(format!(
                        "{at}.arrivalRate must be above 0 and at most 10000 users/s"
                    )));
                }
                Phase::Arrivals {
                    name: p.name.clone(),
                    duration: seconds(&at, duration)?,
                    rate,
                }
            }
            _ => {
                return Err(ProfileError::Invalid(format!(
                    "{at} must be either {{pause: SECONDS}} or {{duration: SECONDS, arrivalRate: USERS_PER_SECOND}}"
                )));
            }
        };
        total += phase.duration().as_secs_f64();
        out.push(phase);
    }
    if total > MAX_SECONDS {
        return Err(ProfileError::Invalid(format!(
            "grafana.phases last {total} s in all; at most {MAX_SECONDS} s"
        )));
    }
    Ok(out)
}

fn seconds(at: &str, s: f64) -> Result<Duration, ProfileError> {
    if s > 0.0 && s <= MAX_SECONDS {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(ProfileError::Invalid(format!(
            "{at}: a duration must be above 0 and at most {MAX_SECONDS} seconds, got {s}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(duration: u64, rate: f64) -> (Duration, f64) {
        (Duration::from_secs(duration), rate)
    }

    fn shape(phases: &[Phase]) -> Vec<Option<(Duration, f64)>> {
        phases
            .iter()
            .map(|p| match p {
                Phase::Arrivals { duration, rate, .. } => Some((*duration, *rate)),
                Phase::Pause(_) => None,
            })
            .collect()
    }

    #[test]
    fn reference_profile_has_the_reference_phases() {
        let p = Profile::reference();
        let pauses: Vec<u64> = p
            .grafana
            .phases
            .iter()
            .filter_map(|p| match p {
                Phase::Pause(d) => Some(d.as_secs()),
                Phase::Arrivals { .. } => None,
            })
            .collect();
        let stages: Vec<_> = shape(&p.grafana.phases).into_iter().flatten().collect();
        assert_eq!(
            stages,
            vec![
                arrivals(50, 1.0),
                arrivals(60, 1.0),
                arrivals(60, 1.0),
                arrivals(50, 2.0),
                arrivals(60, 2.0),
                arrivals(80, 2.0)
            ]
        );
        assert_eq!(pauses, vec![30, 60, 30, 60, 60]);
        assert_eq!(p.grafana.paths.len(), 2);
        assert_eq!(p.grafana.loops, 100);
        assert_eq!(p.grafana.thresholds.p95_ms, Some(75.0));
        assert_eq!(p.grafana.thresholds.p99_ms, Some(100.0));
    }

    /// artillery-grafana.yml, beside this crate's Cargo.toml, runs the same experiment for
    /// Artillery users.
    #[test]
    fn the_artillery_config_has_the_built_in_phases_flow_and_thresholds() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/artillery-grafana.yml");
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let raw: Vec<RawPhase> = serde_yaml::from_value(doc["config"]["phases"].clone()).unwrap();
        let reference = Profile::reference().grafana;
        assert_eq!(phases(&raw).unwrap(), reference.phases);
        let flow = &doc["scenarios"][0]["flow"][0]["loop"];
        assert_eq!(doc["scenarios"][0]["flow"][0]["count"], reference.loops);
        let urls: Vec<&str> = flow
            .as_sequence()
            .unwrap()
            .iter()
            .map(|step| step["get"]["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls, reference.paths);
        let thresholds = &doc["config"]["ensure"]["thresholds"];
        assert_eq!(
            thresholds[0]["http.response_time.p95"].as_f64(),
            reference.thresholds.p95_ms
        );
        assert_eq!(
            thresholds[1]["http.response_time.p99"].as_f64(),
            reference.thresholds.p99_ms
        );
    }

    #[test]
    fn fields_left_out_come_from_the_reference() {
        let p = Profile::parse("coap: {rate: 5000}").unwrap();
        assert_eq!(p.coap.rate, 5000.0);
        assert_eq!(p.coap.duration, Profile::reference().coap.duration);
        // sensor-sim's old flag name still reads.
        assert_eq!(
            Profile::parse("coap: {connections: 2}")
                .unwrap()
                .coap
                .sockets,
            2
        );
        assert_eq!(p.grafana, Profile::reference().grafana);
    }

    #[test]
    fn json_profiles_parse_too() {
        let p = Profile::parse(
            r#"{"grafana": {"phases": [{"duration": 2, "arrivalRate": 0.5}, {"pause": 1}],
                "flow": {"loop": 3, "get": ["/a"]}}}"#,
        )
        .unwrap();
        assert_eq!(shape(&p.grafana.phases), vec![Some(arrivals(2, 0.5)), None]);
        assert_eq!((p.grafana.loops, p.grafana.paths.len()), (3, 1));
    }

    #[test]
    fn a_phase_with_both_pause_and_rate_is_rejected_with_the_two_forms() {
        let err = Profile::parse("grafana: {phases: [{pause: 3, arrivalRate: 1}]}").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("grafana.phases[0]") && text.contains("{pause: SECONDS}"),
            "{text}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Profile::parse("grafana: {phases: [{duration: 3, rampTo: 5}]}").unwrap_err();
        assert!(err.to_string().contains("rampTo"), "{err}");
    }

    #[test]
    fn unbounded_or_empty_loads_are_rejected() {
        for bad in [
            "grafana: {phases: []}",
            "grafana: {phases: [{duration: 100000, arrivalRate: 1}]}",
            "grafana: {phases: [{duration: 0, arrivalRate: 1}]}",
            "grafana: {flow: {get: []}}",
            "grafana: {flow: {get: [dashboards]}}",
            "coap: {rate: 0}",
            "coap: {durationSeconds: -1}",
            "coap: {window: 0}",
        ] {
            assert!(
                matches!(Profile::parse(bad), Err(ProfileError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
