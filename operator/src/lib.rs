//! iot-operator as a library: the binary (`main.rs`) wires these modules together, and the
//! end-to-end tests run the same controller in-process, scoped to their own namespace. The
//! load-test tool (tools/loadtest) resolves a monitor as the controller does, through `crd`,
//! `controller::{dereference, validate}`, `controller::desired::pod`'s security contexts and
//! `constants`; it is not linked into the binary.

pub mod api_client;
pub mod constants;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod metrics;
