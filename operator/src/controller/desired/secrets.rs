//! The Secret of generated credentials. It is created once and never regenerated: new
//! passwords would lock the workloads out of an InfluxDB that was initialised with the old
//! ones, and would restart every pod. So it is not server-side applied like the other
//! children; the apply layer creates it when absent and only adds keys that are missing.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::labels::{Component, owned_meta, unowned_meta};
use crate::controller::validate::{InfluxMode, ValidatedMonitor};

pub const INFLUX_ADMIN_USER: &str = "admin";
pub const INFLUX_WRITER_USER: &str = "iot_writer";
pub const INFLUX_READER_USER: &str = "iot_reader";
pub const GRAFANA_ADMIN_USER: &str = "admin";

pub const KEY_GRAFANA_ADMIN_USERNAME: &str = "grafana-admin-username";
pub const KEY_GRAFANA_ADMIN_PASSWORD: &str = "grafana-admin-password";
pub const KEY_INFLUX_ADMIN_USERNAME: &str = "influxdb-admin-username";
pub const KEY_INFLUX_ADMIN_PASSWORD: &str = "influxdb-admin-password";

/// Length of generated passwords: alphanumeric, so they need no quoting in InfluxQL or YAML.
const PASSWORD_LEN: usize = 32;

/// What the credentials Secret must hold; the values are generated only when a key is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    /// Metadata of the Secret (name, labels, owner reference when it dies with the IotMonitor).
    pub secret: Secret,
    /// Keys with a fixed value (user names).
    pub fixed: BTreeMap<String, String>,
    /// Keys whose value is a generated password.
    pub generated: Vec<String>,
}

impl Credentials {
    /// Values for the keys `existing` lacks. Usernames are fixed; passwords come from
    /// `password`, called once per missing password key.
    pub fn missing(
        &self,
        existing: &BTreeMap<String, ByteString>,
        mut password: impl FnMut() -> String,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (key, value) in &self.fixed {
            if !existing.contains_key(key) {
                out.insert(key.clone(), value.clone());
            }
        }
        for key in &self.generated {
            if !existing.contains_key(key) {
                out.insert(key.clone(), password());
            }
        }
        out
    }

    /// The full Secret for a first creation.
    pub fn new_secret(&self, password: impl FnMut() -> String) -> Secret {
        let data = self.missing(&BTreeMap::new(), password);
        Secret {
            string_data: Some(data),
            type_: Some("Opaque".into()),
            ..self.secret.clone()
        }
    }
}

/// A random password from the operating system's CSPRNG.
pub fn random_password() -> String {
    iot_common::random::alphanumeric(PASSWORD_LEN)
}

pub fn build(model: &ValidatedMonitor) -> Credentials {
    let mut fixed = BTreeMap::from([(
        KEY_GRAFANA_ADMIN_USERNAME.to_owned(),
        GRAFANA_ADMIN_USER.to_owned(),
    )]);
    let mut generated = vec![KEY_GRAFANA_ADMIN_PASSWORD.to_owned()];
    // The Secret opens the data on the volume, so it lives exactly as long as the volume.
    let mut keep_with_data = false;
    if let InfluxMode::Internal(internal) = &model.influx.mode {
        keep_with_data = !internal.delete_with_monitor;
        fixed.insert(KEY_INFLUX_ADMIN_USERNAME.into(), INFLUX_ADMIN_USER.into());
        generated.push(KEY_INFLUX_ADMIN_PASSWORD.into());
        for (creds, user) in [
            (&model.influx.writer, INFLUX_WRITER_USER),
            (&model.influx.reader, INFLUX_READER_USER),
        ] {
            fixed.insert(creds.username_key.clone(), user.into());
            generated.push(creds.password_key.clone());
        }
    }
    let name = &model.names.credentials;
    let metadata = if keep_with_data {
        unowned_meta(model, name, Component::Credentials)
    } else {
        owned_meta(model, name, Component::Credentials)
    };
    Credentials {
        secret: Secret {
            metadata,
            ..Secret::default()
        },
        fixed,
        generated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::model;

    #[test]
    fn new_secret_holds_every_user_and_a_distinct_password_each() {
        let creds = build(&model("{}"));
        let mut n = 0;
        let secret = creds.new_secret(|| {
            n += 1;
            format!("pw{n}")
        });
        let data = secret.string_data.expect("data");
        assert_eq!(data["influxdb-writer-username"], "iot_writer");
        assert_eq!(data["influxdb-reader-username"], "iot_reader");
        let passwords: std::collections::BTreeSet<_> = data
            .iter()
            .filter(|(k, _)| k.ends_with("-password"))
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(passwords.len(), 4, "admin, writer, reader, grafana");
    }

    #[test]
    fn existing_keys_are_never_regenerated() {
        let creds = build(&model("{}"));
        let existing: BTreeMap<_, _> = creds
            .new_secret(|| "old".into())
            .string_data
            .expect("data")
            .into_iter()
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .collect();
        assert!(creds.missing(&existing, || "new".into()).is_empty());
    }

    #[test]
    fn secret_outlives_the_monitor_while_the_data_volume_does() {
        let kept = build(&model("{}"));
        assert!(kept.secret.metadata.owner_references.is_none());
        let dropped = build(&model("{influxdb: {storage: {deleteWithMonitor: true}}}"));
        assert!(dropped.secret.metadata.owner_references.is_some());
    }

    #[test]
    fn passwords_are_long_and_alphanumeric() {
        let pw = random_password();
        assert_eq!(pw.len(), 32);
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
