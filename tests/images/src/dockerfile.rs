//! A reader of the small Dockerfile subset docker/Dockerfile uses: enough to compare each final
//! stage's files and config with the definition, independently of the generator.

use std::collections::BTreeMap;

use crate::definition::ImageConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stage {
    /// The image the stage starts from: `FROM <base> AS <name>` with `--platform=...` dropped,
    /// or, for a stage `FROM` an earlier stage, that stage's base.
    pub base: String,
    /// The earlier stage this one starts from, whose files and config it inherits.
    pub parent: Option<String>,
    pub name: String,
    /// `COPY` instructions, each as its words (`--from=build`, sources, destination).
    pub copies: Vec<Vec<String>>,
    /// `RUN` instructions, continuation lines joined.
    pub runs: Vec<String>,
    /// USER, ENV, EXPOSE, LABEL, ENTRYPOINT and CMD, as an image config.
    pub config: ImageConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum DockerfileError {
    #[error("instruction before the first FROM: {0}")]
    NoStage(String),
    #[error("{0}: {1}")]
    Bad(String, String),
}

/// Instructions with continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// Words split on spaces outside double quotes, quotes kept: `a="b c" d` is `a="b c"`, `d`.
fn words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (i, ch) in s.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if let Some(begin) = start.take() {
                    out.push(&s[begin..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if let Some(begin) = start {
        out.push(&s[begin..]);
    }
    out
}

fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

pub fn parse(text: &str) -> Result<Vec<Stage>, DockerfileError> {
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions(text) {
        let (op, rest) = ins.split_once(' ').unwrap_or((&ins, ""));
        let rest = rest.trim();
        let bad = |why: &str| DockerfileError::Bad(ins.clone(), why.to_string());
        if op.eq_ignore_ascii_case("FROM") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--platform="))
                .collect();
            let [base, as_, name] = words.as_slice() else {
                return Err(bad("expected FROM <base> AS <name>"));
            };
            if !as_.eq_ignore_ascii_case("AS") {
                return Err(bad("expected AS"));
            }
            // As Docker builds it: a stage from an earlier one starts with its files and config.
            let stage = match stages.iter().find(|s| s.name == *base) {
                Some(parent) => Stage {
                    parent: Some(parent.name.clone()),
                    name: name.to_string(),
                    runs: Vec::new(),
                    ..parent.clone()
                },
                None => Stage {
                    base: base.to_string(),
                    name: name.to_string(),
                    ..Stage::default()
                },
            };
            stages.push(stage);
            continue;
        }
        let stage = stages
            .last_mut()
            .ok_or_else(|| DockerfileError::NoStage(ins.clone()))?;
        let json_words =
            || serde_json::from_str::<Vec<String>>(rest).map_err(|_| bad("expected a JSON array"));
        let c = &mut stage.config;
        match op.to_ascii_uppercase().as_str() {
            "COPY" => stage
                .copies
                .push(rest.split_whitespace().map(str::to_string).collect()),
            "RUN" => stage.runs.push(rest.to_string()),
            "USER" => c.user = rest.to_string(),
            "ENV" => {
                let (k, v) = rest
                    .split_once('=')
                    .ok_or_else(|| bad("expected ENV K=V"))?;
                c.env.push(format!("{k}={}", unquote(v)));
            }
            "EXPOSE" => {
                for port in rest.split_whitespace() {
                    let port = if port.contains('/') {
                        port.to_string()
                    } else {
                        format!("{port}/tcp")
                    };
                    c.exposed_ports.insert(port);
                }
            }
            "LABEL" => {
                for pair in words(rest) {
                    let (k, v) = pair
                        .split_once('=')
                        .ok_or_else(|| bad("expected LABEL K=\"V\" ..."))?;
                    c.labels.insert(k.to_string(), unquote(v));
                }
            }
            "ENTRYPOINT" => c.entrypoint = json_words()?,
            "CMD" => c.cmd = json_words()?,
            "ARG" | "WORKDIR" => {}
            other => return Err(bad(&format!("{other} is not expected here"))),
        }
    }
    Ok(stages)
}

/// The stages no later stage starts from, other than `build`: the images a `--target` picks.
pub fn finals(stages: &[Stage]) -> Vec<&Stage> {
    stages
        .iter()
        .filter(|s| s.name != "build" && !stages.iter().any(|t| t.parent.as_ref() == Some(&s.name)))
        .collect()
}

/// Stages by name.
pub fn by_name(stages: &[Stage]) -> BTreeMap<&str, &Stage> {
    stages.iter().map(|s| (s.name.as_str(), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stages_continuations_and_config() {
        let s = parse(
            "# x\nFROM --platform=$BUILDPLATFORM img AS build\nRUN a \\\n    b\n\n\
             FROM scratch AS one\nCOPY --from=build /r/one/ /\nUSER 1:1\nENV P=/bin\n\
             EXPOSE 9090 5683/udp\nLABEL a.b=\"c d\"\nENTRYPOINT [\"/one\"]\nCMD [\"run\"]\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].runs, vec!["a b"]);
        let one = &s[1];
        assert_eq!(one.base, "scratch");
        assert_eq!(one.copies[0], vec!["--from=build", "/r/one/", "/"]);
        assert_eq!(one.config.env, vec!["P=/bin"]);
        assert!(one.config.exposed_ports.contains("9090/tcp"));
        assert_eq!(one.config.labels["a.b"], "c d");
        assert_eq!(one.config.cmd, vec!["run"]);
    }

    #[test]
    fn a_stage_from_an_earlier_one_inherits_its_files_and_config() {
        let s = parse(
            "FROM scratch AS common\nUSER 1:1\nENV A=1\nLABEL x=\"1\" y=\"two words\"\n\
             FROM common AS one\nCOPY --from=build /r/one/ /\nENV B=2\nLABEL z=\"3\"\n",
        )
        .unwrap();
        let one = &s[1];
        assert_eq!(
            (one.base.as_str(), one.parent.as_deref()),
            ("scratch", Some("common"))
        );
        assert_eq!(one.config.user, "1:1");
        assert_eq!(one.config.env, vec!["A=1", "B=2"]);
        let labels: Vec<(&str, &str)> = one
            .config
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(labels, vec![("x", "1"), ("y", "two words"), ("z", "3")]);
        assert!(s[0].copies.is_empty(), "the parent keeps only its own");
        let names: Vec<&str> = finals(&s).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["one"]);
    }
}
