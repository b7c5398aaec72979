//! Free loopback ports for servers that tests start.
//!
//! The probe's socket is closed again before the server binds, so another process can take the
//! port in between (outgoing connections draw from the same range). That is rare; starters that
//! see a bind conflict try again with new ports ([`crate::process::Service::start`]).

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("no free UDP port on 127.0.0.1")
}

/// 127.0.0.1 with a free TCP port.
pub fn free_tcp_addr() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// 127.0.0.1 with a free UDP port.
pub fn free_udp_addr() -> SocketAddr {
    ([127, 0, 0, 1], free_udp_port()).into()
}
