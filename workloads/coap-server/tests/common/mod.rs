//! The coap-server binary under test, on free loopback ports.

use std::net::SocketAddr;
use std::process::Command;

use iot_testkit::ports::free_udp_addr;
use iot_testkit::process::Service;

pub struct CoapServer {
    pub service: Service,
    /// Where it takes CoAP.
    pub coap: SocketAddr,
}

impl CoapServer {
    /// Starts coap-server against InfluxDB at `influx_url` (database `dht`, Max-Age 1 s) and
    /// waits until `ready_path` answers 200: `/readyz` once it can store readings, `/healthz`
    /// once it runs.
    pub async fn start(influx_url: &str, extra: &[&str], ready_path: &str) -> Self {
        let mut coap = free_udp_addr();
        let service = Service::start("coap-server", ready_path, |http| {
            coap = free_udp_addr();
            let mut c = Command::new(env!("CARGO_BIN_EXE_coap-server"));
            c.args(["--bind", &coap.to_string()])
                .args(["--http-addr", &http.to_string()])
                .args(["--influx-url", influx_url, "--influx-db", "dht"])
                .args(["--retry-after-seconds", "1"])
                .args(extra)
                .env("RUST_LOG", "info");
            c
        })
        .await;
        CoapServer { service, coap }
    }
}
