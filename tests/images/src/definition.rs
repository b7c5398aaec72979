//! images/images.conf, read independently of the shell builders, so that a test can hold both
//! builders to it. The format is described at the top of the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// What one image's config says: the part both builders must agree on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub exposed_ports: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
}

/// One file-system entry of an image, as the definition lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An ELF executable; its interpreter and libraries come along.
    Exe {
        src: String,
        dest: String,
    },
    File {
        src: String,
        dest: String,
    },
    Link {
        dest: String,
        target: String,
    },
    /// A C program compiled static.
    Cc {
        src: String,
        dest: String,
    },
}

impl Entry {
    pub fn dest(&self) -> &str {
        match self {
            Entry::Exe { dest, .. } | Entry::File { dest, .. } | Entry::Cc { dest, .. } => dest,
            Entry::Link { dest, .. } => dest,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDef {
    pub name: String,
    /// The reference with its variables (`${version}`, ...) unexpanded.
    pub reference: String,
    /// Built by docker/Dockerfile too.
    pub docker: bool,
    pub entries: Vec<Entry>,
    pub config: ImageConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Settings above the first image (`builder`).
    pub globals: BTreeMap<String, String>,
    pub images: Vec<ImageDef>,
}

#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("line {line}: {what}")]
    Syntax { line: usize, what: String },
}

impl Definition {
    pub fn load(path: &Path) -> Result<Self, DefinitionError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DefinitionError::Read(path.display().to_string(), e))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, DefinitionError> {
        let mut globals = BTreeMap::new();
        let mut images: Vec<ImageDef> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let bad = |what: &str| DefinitionError::Syntax {
                line: i + 1,
                what: format!("{what}: {line}"),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                images.push(ImageDef {
                    name: name.to_string(),
                    reference: String::new(),
                    docker: false,
                    entries: Vec::new(),
                    config: ImageConfig::default(),
                });
                continue;
            }
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            let words: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            let Some(image) = images.last_mut() else {
                globals.insert(key.to_string(), rest.to_string());
                continue;
            };
            let pair = || match words.as_slice() {
                [a, b] => Ok((a.clone(), b.clone())),
                _ => Err(bad("expected two words")),
            };
            let key_value = || {
                rest.split_once('=')
                    .ok_or_else(|| bad("expected KEY=VALUE"))
            };
            let c = &mut image.config;
            match key {
                "ref" => image.reference = rest.to_string(),
                "docker" => image.docker = true,
                "exe" => pair().map(|(src, dest)| image.entries.push(Entry::Exe { src, dest }))?,
                "file" => {
                    pair().map(|(src, dest)| image.entries.push(Entry::File { src, dest }))?
                }
                "cc" => pair().map(|(src, dest)| image.entries.push(Entry::Cc { src, dest }))?,
                "link" => {
                    pair().map(|(dest, target)| image.entries.push(Entry::Link { dest, target }))?
                }
                "user" => c.user = rest.to_string(),
                "env" => c.env.push(rest.to_string()),
                "entrypoint" => c.entrypoint = words,
                "cmd" => c.cmd = words,
                "expose" => {
                    c.exposed_ports.insert(rest.to_string());
                }
                "label" => {
                    let (k, v) = key_value()?;
                    c.labels.insert(k.to_string(), v.to_string());
                }
                _ => return Err(bad("unknown key")),
            }
        }
        Ok(Definition { globals, images })
    }

    pub fn image(&self, name: &str) -> Option<&ImageDef> {
        self.images.iter().find(|i| i.name == name)
    }

    pub fn docker_images(&self) -> impl Iterator<Item = &ImageDef> {
        self.images.iter().filter(|i| i.docker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_image_with_every_key() {
        let d = Definition::parse(
            "builder rust:1-bookworm\n# c\n[a]\nref x/a:${version}\ndocker\nexe ${release}/a /a\n\
             file f /etc/f\nlink /bin/sh busybox\ncc p.c /p\nuser 1:2\nenv A=b=c\n\
             entrypoint /a run\ncmd x\nexpose 1/udp\nlabel k=v w\n",
        )
        .unwrap();
        assert_eq!(d.globals["builder"], "rust:1-bookworm");
        let a = d.image("a").unwrap();
        assert!(a.docker);
        assert_eq!(a.entries.len(), 4);
        assert_eq!(a.entries[2].dest(), "/bin/sh");
        assert_eq!(a.config.env, vec!["A=b=c"]);
        assert_eq!(a.config.entrypoint, vec!["/a", "run"]);
        assert_eq!(a.config.labels["k"], "v w");
    }

    #[test]
    fn rejects_an_unknown_key_with_its_line() {
        let e = Definition::parse("[a]\nfrobnicate 1\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2:"), "{e}");
    }
}
