//! `iot-operator loadtest`.

pub mod http_load;
pub mod meter;
pub mod profile;
pub mod quantity;
pub mod schedule;
pub mod timeline;
