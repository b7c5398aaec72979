//! UDP sockets with large kernel buffers, and [`Datagrams`]: datagrams sent and received in
//! batches.
//!
//! A CoAP peer that answers a whole batch at once sends a burst of datagrams; with the kernel's
//! default receive buffer (about 200 KB) the other side drops some of them, and each drop costs
//! a retransmission seconds later (RFC 7252's ACK_TIMEOUT). The kernel caps what is asked for at
//! `net.core.rmem_max` / `wmem_max`; asking for more is harmless.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

mod batched;

pub use batched::{Datagrams, Inbox, Outbox};

/// Kernel buffer sizes to ask for, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffers {
    pub recv: usize,
    pub send: usize,
}

/// Binds a non-blocking UDP socket at `addr` (port 0: any free port) with `buffers`.
pub fn bind(addr: SocketAddr, buffers: Buffers) -> std::io::Result<UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer than asked for still works, only less well under bursts.
    let _ = sock.set_recv_buffer_size(buffers.recv);
    let _ = sock.set_send_buffer_size(buffers.send);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// The unspecified address of `peer`'s family with port 0: where a client binds to reach it.
pub fn any_local_for(peer: SocketAddr) -> SocketAddr {
    if peer.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bound_socket_exchanges_datagrams_and_got_larger_buffers() {
        let big = Buffers {
            recv: 1 << 20,
            send: 1 << 20,
        };
        let server = bind(([127, 0, 0, 1], 0).into(), big).expect("bind server");
        let server_addr = server.local_addr().expect("addr");
        let client = bind(any_local_for(server_addr), big).expect("bind client");
        client.connect(server_addr).await.expect("connect");
        client.send(b"ping").await.expect("send");
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from.port(), client.local_addr().expect("addr").port());
        let sock = socket2::SockRef::from(&server);
        // Linux doubles what it grants; the default is about 200 KB.
        assert!(sock.recv_buffer_size().expect("size") > 256 * 1024);
    }
}
