//! `iot-operator loadtest`.

pub mod http_load;
pub mod meter;
pub mod plot;
pub mod profile;
pub mod quantity;
pub mod schedule;
pub mod timeline;
