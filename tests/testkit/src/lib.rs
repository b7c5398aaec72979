//! Test fixtures shared by the workspace's integration tests: a throw-away InfluxDB and the
//! local Kubernetes control plane with its real node.

pub mod bins;
pub mod cluster;
pub mod influx;
pub mod real_node;
