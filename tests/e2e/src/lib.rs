//! What the end-to-end tests share: [`operator_support`], an operator run in-process against the
//! local control plane, scoped to one test's namespace, and the waits on its IotMonitors.

pub mod operator_support;
