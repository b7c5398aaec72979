//! iot-operator as a library: the binary (`main.rs`) wires these modules together, and the
//! end-to-end tests run the same controller in-process, scoped to their own namespace.

pub mod api_client;
pub mod constants;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod loadtest;
pub mod metrics;
