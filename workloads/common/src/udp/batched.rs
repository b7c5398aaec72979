//! A UDP socket that moves datagrams in batches: many received with one system call
//! (`recvmmsg`, and UDP GRO, where the kernel hands over a burst from one peer as one buffer),
//! many sent with one (UDP GSO: datagrams of one size to one peer, given to the kernel as one
//! buffer that it cuts up). The platform part is quinn-udp's; this module groups the datagrams.
//!
//! Why: at tens of thousands of CoAP readings a second, one `sendto` and one `recvfrom` per
//! datagram, each walking the kernel's UDP path on its own, were most of the CPU of the client
//! and the server. A batch of answers to one client is mostly datagrams of one size.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Room for one received buffer: with GRO the kernel may coalesce up to 64 datagrams of one
/// peer into it, at most 64 KB in all; a smaller buffer would truncate them.
const SLOT: usize = 64 * 1024;

/// What one GSO send may carry: the IP datagram's 64 KB limit, less its headers.
const MAX_GSO_BYTES: usize = 65_000;

pub struct Datagrams {
    socket: UdpSocket,
    state: UdpSocketState,
}

impl Datagrams {
    /// Takes over `socket` (bound, non-blocking) and turns on what the kernel offers (GRO).
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        Ok(Datagrams { socket, state })
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// How many datagrams one send may carry (1 where the kernel has no UDP GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Waits for datagrams and fills `inbox` with what is there (at least one).
    pub async fn recv(&self, inbox: &mut Inbox) -> io::Result<()> {
        inbox.filled = 0;
        let (state, socket) = (&self.state, &self.socket);
        let filled = socket
            .async_io(Interest::READABLE, || {
                let mut slices: Vec<IoSliceMut<'_>> =
                    inbox.buffer.chunks_mut(SLOT).map(IoSliceMut::new).collect();
                state.recv(UdpSockRef::from(socket), &mut slices, &mut inbox.meta)
            })
            .await?;
        inbox.filled = filled;
        Ok(())
    }

    /// Sends what `outbox` holds without waiting; what the socket buffer has no room for is
    /// dropped (the peer retransmits). Returns the number of datagrams dropped.
    pub fn try_send(&self, outbox: &mut Outbox) -> usize {
        let mut dropped = 0;
        for batch in outbox.drain(self.max_segments()) {
            if let Err(e) = self
                .state
                .try_send(UdpSockRef::from(&self.socket), &batch.transmit())
            {
                dropped += batch.count;
                tracing::debug!(error = %e, peer = %batch.peer, count = batch.count, "datagrams not sent");
            }
        }
        dropped
    }

    /// Sends what `outbox` holds, waiting for room in the socket buffer. A datagram the kernel
    /// refuses (an ICMP error of an earlier one surfacing, say) is dropped: the sender's
    /// retransmission covers it. Returns the number of datagrams dropped.
    pub async fn send(&self, outbox: &mut Outbox) -> usize {
        let mut dropped = 0;
        for batch in outbox.drain(self.max_segments()) {
            let transmit = batch.transmit();
            let sent = self
                .socket
                .async_io(Interest::WRITABLE, || {
                    self.state
                        .try_send(UdpSockRef::from(&self.socket), &transmit)
                })
                .await;
            if let Err(e) = sent {
                dropped += batch.count;
                tracing::debug!(error = %e, peer = %batch.peer, count = batch.count, "datagrams not sent");
            }
        }
        dropped
    }
}

/// Received datagrams; reused from one receive to the next.
pub struct Inbox {
    buffer: Vec<u8>,
    meta: Vec<RecvMeta>,
    filled: usize,
}

impl Inbox {
    /// Room for `buffers` receive buffers per system call (each may hold a coalesced burst).
    /// Memory is reserved, not touched: a small datagram uses one page of its buffer.
    pub fn new(buffers: usize) -> Self {
        let buffers = buffers.clamp(1, quinn_udp::BATCH_SIZE);
        Inbox {
            buffer: vec![0; buffers * SLOT],
            meta: vec![RecvMeta::default(); buffers],
            filled: 0,
        }
    }

    /// The datagrams of the last receive, each with its sender.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        self.meta[..self.filled]
            .iter()
            .zip(self.buffer.chunks(SLOT))
            .flat_map(|(meta, slot)| {
                let stride = meta.stride.max(1);
                slot[..meta.len.min(slot.len())]
                    .chunks(stride)
                    .map(move |datagram| (datagram, meta.addr))
            })
    }
}

/// Datagrams to send, gathered so that they go out in few system calls.
#[derive(Default)]
pub struct Outbox {
    queued: Vec<(SocketAddr, Vec<u8>)>,
    keep_order: bool,
}

impl Outbox {
    /// An outbox that sends each peer's datagrams in the order they were pushed, batching only
    /// runs of one size. DTLS needs it: a record more than 64 behind the newest one seen falls
    /// out of the receiver's replay window and is dropped as a replay (RFC 6347 §4.1.2.6).
    pub fn ordered() -> Self {
        Outbox {
            queued: Vec::new(),
            keep_order: true,
        }
    }

    pub fn push(&mut self, peer: SocketAddr, datagram: Vec<u8>) {
        self.queued.push((peer, datagram));
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Empties the outbox into batches: datagrams to one peer, by size, largest first, so that
    /// each run of one size (and one shorter datagram after it, which GSO allows as the last)
    /// is one batch of at most `max_segments` datagrams. Order between datagrams is not kept
    /// (UDP does not promise it either), unless the outbox is [`Outbox::ordered`]: then each
    /// peer's datagrams keep their order and only consecutive runs of one size are batched.
    /// The outbox keeps its allocation for the next turn.
    fn drain(&mut self, max_segments: usize) -> Vec<Batch> {
        let mut queued = std::mem::take(&mut self.queued);
        if self.keep_order {
            // Stable: the order within one peer stays.
            queued.sort_by_key(|(peer, _)| *peer);
        } else {
            queued.sort_unstable_by(|(pa, a), (pb, b)| pa.cmp(pb).then(b.len().cmp(&a.len())));
        }
        let mut batches = Vec::new();
        let mut rest = &queued[..];
        while let Some(((peer, first), _)) = rest.split_first() {
            let size = first.len();
            // An empty datagram cannot be a GSO segment: it goes alone.
            let limit = match size {
                0 => 1,
                _ => max_segments.clamp(1, (MAX_GSO_BYTES / size).max(1)),
            };
            let same = |(p, d): &(SocketAddr, Vec<u8>)| p == peer && d.len() == size;
            let mut count = rest.iter().take(limit).take_while(|q| same(q)).count();
            let shorter = |(p, d): &(SocketAddr, Vec<u8>)| p == peer && d.len() < size;
            if count < limit && rest.get(count).is_some_and(shorter) {
                count += 1;
            }
            let mut contents = Vec::with_capacity(size * count);
            for (_, d) in &rest[..count] {
                contents.extend_from_slice(d);
            }
            batches.push(Batch {
                peer: *peer,
                contents,
                segment_size: size,
                count,
            });
            rest = &rest[count..];
        }
        queued.clear();
        self.queued = queued;
        batches
    }
}

/// Datagrams to one peer, one after the other, all of one size but the last.
struct Batch {
    peer: SocketAddr,
    contents: Vec<u8>,
    segment_size: usize,
    count: usize,
}

impl Batch {
    fn transmit(&self) -> Transmit<'_> {
        Transmit {
            destination: self.peer,
            ecn: None,
            contents: &self.contents,
            segment_size: (self.count > 1).then_some(self.segment_size),
            src_ip: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    /// The transmits an outbox becomes: (peer port, segment size, datagram sizes).
    fn plan(outbox: &mut Outbox, max_segments: usize) -> Vec<(u16, Option<usize>, usize)> {
        outbox
            .drain(max_segments)
            .iter()
            .map(|b| {
                let t = b.transmit();
                (t.destination.port(), t.segment_size, t.contents.len())
            })
            .collect()
    }

    #[test]
    fn one_size_to_one_peer_is_one_transmit_and_a_shorter_one_may_end_it() {
        let mut o = Outbox::default();
        for _ in 0..5 {
            o.push(addr(1), vec![1; 40]);
        }
        o.push(addr(1), vec![2; 38]);
        o.push(addr(1), vec![3; 38]);
        o.push(addr(2), vec![4; 40]);
        // peer 1: 5 × 40 + one 38 in one transmit, the other 38 alone; peer 2 alone.
        assert_eq!(
            plan(&mut o, 64),
            vec![(1, Some(40), 238), (1, None, 38), (2, None, 40)]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn an_ordered_outbox_keeps_each_peers_order() {
        let mut o = Outbox::ordered();
        for (peer, size) in [(1, 40), (2, 10), (1, 40), (1, 50), (1, 38), (1, 50)] {
            o.push(addr(peer), vec![0; size]);
        }
        // peer 1: 40, 40 together; 50 then the shorter 38; 50 alone. Then peer 2.
        assert_eq!(
            plan(&mut o, 64),
            vec![
                (1, Some(40), 80),
                (1, Some(50), 88),
                (1, None, 50),
                (2, None, 10)
            ]
        );
    }

    #[test]
    fn transmits_stay_within_the_segment_count_and_the_64_kb_limit() {
        let mut o = Outbox::default();
        for _ in 0..10 {
            o.push(addr(1), vec![0; 20]);
        }
        assert_eq!(
            plan(&mut o, 4),
            vec![(1, Some(20), 80), (1, Some(20), 80), (1, Some(20), 40)]
        );
        for _ in 0..70 {
            o.push(addr(1), vec![0; 1100]);
        }
        let sizes: Vec<usize> = plan(&mut o, 64).iter().map(|t| t.2).collect();
        assert_eq!(sizes, vec![59 * 1100, 11 * 1100]);
        // Empty datagrams go alone, whatever GSO allows.
        o.push(addr(1), Vec::new());
        o.push(addr(1), Vec::new());
        assert_eq!(plan(&mut o, 64), vec![(1, None, 0), (1, None, 0)]);
        // Without GSO every datagram goes alone.
        o.push(addr(1), vec![0; 20]);
        o.push(addr(1), vec![0; 20]);
        assert_eq!(plan(&mut o, 1), vec![(1, None, 20), (1, None, 20)]);
    }

    #[tokio::test]
    async fn a_batch_sent_is_received_whole_with_its_datagrams_apart() {
        let bind = || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            Datagrams::new(UdpSocket::from_std(s).unwrap()).unwrap()
        };
        let (a, b) = (bind(), bind());
        let to = b.socket().local_addr().unwrap();
        let mut o = Outbox::default();
        let sent: Vec<Vec<u8>> = (0..100u8)
            .map(|i| vec![i; if i % 10 == 0 { 30 } else { 50 }])
            .collect();
        for d in &sent {
            o.push(to, d.clone());
        }
        assert_eq!(a.send(&mut o).await, 0);
        let mut inbox = Inbox::new(8);
        let (mut got, mut receives) = (Vec::new(), 0);
        while got.len() < sent.len() {
            receives += 1;
            tokio::time::timeout(std::time::Duration::from_secs(5), b.recv(&mut inbox))
                .await
                .expect("datagrams within 5 s")
                .unwrap();
            for (d, from) in inbox.datagrams() {
                assert_eq!(from, a.socket().local_addr().unwrap());
                got.push(d.to_vec());
            }
        }
        // All were sent before the first receive: they arrive in batches, not one by one.
        assert!(receives < sent.len() / 4, "{receives} receives");
        got.sort();
        let mut want = sent;
        want.sort();
        assert_eq!(got, want);
    }
}
