//! What the end-to-end tests share: [`operator_support`], an operator run in-process against the
//! local control plane, scoped to one test's namespace, and the waits on its IotMonitors; and
//! [`stack_influx`], a stack's InfluxDB queried as its admin from the real node's host.

pub mod operator_support;
pub mod stack_influx;
