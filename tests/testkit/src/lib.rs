//! Test fixtures shared by the workspace's integration tests: the workspace's binaries as
//! processes and services ([`process`], [`bins`]), a raw CoAP client ([`coap`]), the dashboards' queries ([`dashboards`]), waiting
//! ([`wait`]), free ports ([`ports`]), a throw-away InfluxDB ([`influx`]), a real S3-compatible
//! server ([`s3`]) and the local
//! Kubernetes control plane ([`cluster`]) with its real node ([`real_node`]), and what a
//! torn-down cluster must not leave behind ([`leftovers`]).

pub mod bins;
pub mod cluster;
pub mod coap;
pub mod dashboards;
pub mod dtls;
pub mod influx;
pub mod leftovers;
pub mod ports;
pub mod process;
pub mod real_node;
pub mod s3;
pub mod wait;
