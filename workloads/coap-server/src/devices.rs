//! The device registry: who may write over DTLS, with which key, and at which place.
//!
//! A device's PSK identity is its name; its readings are stored with `sensor=<name>` and the
//! place the registry gives it, whatever its query says (a contradicting query is refused). The
//! registry is replaced whole when its source changes ([`Devices::replace`]); sessions of
//! devices removed or re-keyed are then closed, so a revocation or a rotation takes effect
//! without a restart.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Longest key taken, in bytes (Mbed TLS is built to take keys this long; real keys are 16–64).
pub const MAX_KEY_LEN: usize = 64;
/// Shortest key taken: 16 bytes, 128 bits if they are random bytes, fewer if printable.
pub const MIN_KEY_LEN: usize = 16;

/// One registered device.
#[derive(Debug, PartialEq, Eq)]
pub struct Device {
    /// Its name: the PSK identity and the `sensor` tag of its readings.
    pub name: Arc<str>,
    /// The `place` tag of its readings.
    pub place: Arc<str>,
    key: Vec<u8>,
}

impl Device {
    /// A device; `key`'s bytes are the pre-shared key.
    pub fn new(name: &str, place: &str, key: &[u8]) -> Result<Device, DeviceError> {
        let bad = |why: &str| DeviceError(format!("device '{name}': {why}"));
        if !is_tag(name) {
            return Err(bad("a name is 1-64 characters of A-Z a-z 0-9 . _ -"));
        }
        if !is_tag(place) {
            return Err(bad("a place is 1-64 characters of A-Z a-z 0-9 . _ -"));
        }
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(bad(&format!(
                "its key has {} bytes; it must have {MIN_KEY_LEN} to {MAX_KEY_LEN}",
                key.len()
            )));
        }
        Ok(Device {
            name: name.into(),
            place: place.into(),
            key: key.to_vec(),
        })
    }

    /// The pre-shared key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

/// The same rule as the tags of anonymous readings (`resource`), so a device's tags are tags
/// an anonymous sender could have written.
fn is_tag(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A registry entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(String);

/// All registered devices, by name.
#[derive(Debug, Default)]
pub struct Registry {
    by_name: HashMap<Arc<str>, Arc<Device>>,
}

impl Registry {
    /// A registry of `devices`; a name given twice keeps its last entry.
    pub fn new(devices: impl IntoIterator<Item = Device>) -> Registry {
        Registry {
            by_name: devices
                .into_iter()
                .map(|d| (d.name.clone(), Arc::new(d)))
                .collect(),
        }
    }

    /// The device called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Device>> {
        std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.by_name.get(n))
    }

    /// How many devices it holds.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `device` is still registered, with the same place and key.
    pub(crate) fn still_has(&self, device: &Device) -> bool {
        self.by_name
            .get(&device.name)
            .is_some_and(|d| d.as_ref() == device)
    }
}

/// The registry a running server uses; [`Devices::replace`] swaps in a new one.
#[derive(Clone, Default)]
pub struct Devices {
    current: Arc<RwLock<Arc<Registry>>>,
    /// Bumped on every replacement, so the DTLS side knows to check its sessions.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Devices {
    /// Devices starting with `registry`.
    pub fn new(registry: Registry) -> Devices {
        let devices = Devices::default();
        devices.replace(registry);
        devices
    }

    /// The registry now.
    pub fn current(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the registry; sessions of devices it no longer holds (or holds with another key
    /// or place) are closed at the next received datagram.
    pub fn replace(&self, registry: Registry) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(registry);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Reads a devices file: one device per line, `NAME PLACE KEY` separated by blanks; blank lines
/// and lines starting with `#` are skipped. Every bad line is reported, with its number.
pub fn parse_file(text: &str) -> Result<Registry, Vec<String>> {
    let mut devices = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [name, place, key] => match Device::new(name, place, key.as_bytes()) {
                Ok(d) => devices.push(d),
                Err(e) => errors.push(format!("line {}: {e}", n + 1)),
            },
            _ => errors.push(format!(
                "line {}: expected NAME PLACE KEY, found {} words",
                n + 1,
                words.len()
            )),
        }
    }
    if errors.is_empty() {
        Ok(Registry::new(devices))
    } else {
        Err(errors)
    }
}

/// Builds the registry from two maps of the same device names: their keys (a Secret's data)
/// and their places (a ConfigMap's data). A device needs both; one that is incomplete or
/// invalid is left out and reported, so one bad entry does not revoke everyone.
pub fn from_maps<'m>(
    keys: impl IntoIterator<Item = (&'m str, &'m [u8])>,
    places: &HashMap<String, String>,
) -> (Registry, Vec<String>) {
    let mut devices = Vec::new();
    let mut problems = Vec::new();
    for (name, key) in keys {
        let Some(place) = places.get(name) else {
            problems.push(format!("device '{name}' has a key but no place yet"));
            continue;
        };
        match Device::new(name, place, key) {
            Ok(d) => devices.push(d),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (Registry::new(devices), problems)
}

/// A devices file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read the devices file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the devices file {path} has errors:\n  {}", errors.join("\n  "))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

/// Reads and parses the devices file at `path`.
pub fn read_file(path: &Path) -> Result<Registry, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(&text).map_err(|errors| FileError::Invalid {
        path: path.to_owned(),
        errors,
    })
}

/// How often a devices file is looked at for changes.
pub const FILE_POLL: Duration = Duration::from_secs(2);

/// Keeps `devices` up to date with the file at `path`, looked at every [`FILE_POLL`]. A file
/// that turns bad leaves the last good registry in place (and says so), so a half-written edit
/// revokes no one.
pub async fn follow_file(path: PathBuf, devices: Devices) {
    let mut seen = fingerprint(&path);
    loop {
        tokio::time::sleep(FILE_POLL).await;
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match read_file(&path) {
            Ok(registry) => {
                tracing::info!(path = %path.display(), devices = registry.len(), "devices file changed");
                devices.replace(registry);
            }
            Err(e) => tracing::warn!(error = %e, "devices file not taken; keeping the last one"),
        }
    }
}

/// What changes when the file does: its modification time, size and content hash.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    let mut h = DefaultHasher::new();
    std::fs::read(path).ok()?.hash(&mut h);
    Some((meta.modified().ok()?, h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k3y-of-sixteen-b";

    #[test]
    fn a_devices_file_names_places_and_keys() {
        let text = format!("# name place key\n\ndht-1 kitchen {KEY}\n  dht-2 lab {KEY}x  \n");
        let registry = parse_file(&text).expect("valid");
        assert_eq!(registry.len(), 2);
        let d = registry.get(b"dht-2").expect("dht-2");
        assert_eq!(
            (&*d.name, &*d.place, d.key()),
            ("dht-2", "lab", b"k3y-of-sixteen-bx" as &[u8])
        );
        assert!(registry.get(b"dht-3").is_none());
        assert!(registry.get(&[0xff]).is_none());
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = format!("dht-1 kitchen\nbad/name lab {KEY}\ndht-3 lab short\ndht-4 a,b {KEY}\n");
        let errors = parse_file(&text).expect_err("invalid");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("line 1: expected NAME PLACE KEY"));
        assert!(errors[1].contains("line 2") && errors[1].contains("name"));
        assert!(errors[2].contains("line 3") && errors[2].contains("5 bytes"));
        assert!(errors[3].contains("line 4") && errors[3].contains("place"));
    }

    #[test]
    fn a_device_needs_a_key_and_a_place() {
        let places: HashMap<String, String> = [("a", "kitchen"), ("c", "lab")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let keys: [(&str, &[u8]); 3] = [
            ("a", KEY.as_bytes()),
            ("b", KEY.as_bytes()),
            ("c", b"short"),
        ];
        let (registry, problems) = from_maps(keys, &places);
        assert_eq!(registry.len(), 1);
        assert_eq!(&*registry.get(b"a").expect("a").place, "kitchen");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("'b' has a key but no place"));
        assert!(problems[1].contains("'c'") && problems[1].contains("5 bytes"));
    }

    #[test]
    fn a_replaced_registry_tells_who_is_still_there() {
        let devices = Devices::new(parse_file(&format!("a p {KEY}\nb p {KEY}\n")).expect("ok"));
        let a = devices.current().get(b"a").expect("a").clone();
        let b = devices.current().get(b"b").expect("b").clone();
        let before = devices.generation();
        devices.replace(parse_file(&format!("a p {KEY}\nb p {KEY}-new\n")).expect("ok"));
        assert!(devices.generation() > before);
        let now = devices.current();
        assert!(now.still_has(&a), "unchanged");
        assert!(!now.still_has(&b), "re-keyed");
    }
}
