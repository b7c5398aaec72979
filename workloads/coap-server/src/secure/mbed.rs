//! The DTLS server itself, by Mbed TLS (the `mbedtls` crate): its configuration, the PSK lookup
//! in the device registry, and one session over datagrams the caller moves.
//!
//! Mbed TLS does the records, the handshake, the stateless cookies and the cryptography; this
//! module only carries datagrams in and out and tells the caller what a datagram did. Mbed TLS
//! is built with a 2 KB read and a 1 KB write record buffer per session instead of 16 KB each
//! (`.cargo/config.toml`): an established session then costs about 6 KB, so 10,000 of them fit
//! in well under 100 MB (docs/benchmarks.md).

use std::ffi::{c_int, c_uchar, c_void};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use mbedtls::error::codes;
use mbedtls::rng::{CtrDrbg, OsEntropy};
use mbedtls::ssl::ciphersuites::CipherSuite;
use mbedtls::ssl::config::{Endpoint, Preset, Transport, Version};
use mbedtls::ssl::context::Timer;
use mbedtls::ssl::io::Io;
use mbedtls::ssl::{Config, Context, CookieContext};

use crate::devices::{Device, Devices};

/// The DTLS server could not be set up: Mbed TLS's own error.
#[derive(Debug, thiserror::Error)]
#[error("DTLS set-up failed: {0}")]
pub struct SetupError(#[from] mbedtls::Error);

/// The server side's configuration, shared by every session.
pub(crate) struct Server {
    config: Arc<Config>,
    /// Read by Mbed TLS through a raw pointer in `config` (the PSK callback); every session
    /// holds it too, so it outlives every context that may call the callback.
    psk: Arc<PskLookup>,
}

// SAFETY: the configuration is not changed after `Server::new`, and every session of it is
// used under the sessions' lock, by one thread at a time; Mbed TLS keeps no thread-local state.
unsafe impl Send for Server {}

/// Finds a device's key by its PSK identity, and notes which device it was.
struct PskLookup {
    devices: Devices,
    identified: Mutex<Option<Arc<Device>>>,
}

/// Mbed TLS's `f_psk` callback: sets the handshake's key to the device's, or refuses an
/// identity the registry does not hold (Mbed TLS then ends the handshake with an
/// `unknown_psk_identity` alert).
unsafe extern "C" fn psk_callback(
    lookup: *mut c_void,
    ssl: *mut mbedtls_sys::ssl_context,
    identity: *const c_uchar,
    identity_len: usize,
) -> c_int {
    if lookup.is_null() || identity.is_null() || identity_len == 0 {
        return -1;
    }
    // SAFETY: `lookup` is the `PskLookup` that `Server::new` registered and keeps alive;
    // `identity` points at `identity_len` bytes of the ClientKeyExchange being parsed.
    let (lookup, identity) = unsafe {
        (
            &*(lookup as *const PskLookup),
            std::slice::from_raw_parts(identity, identity_len),
        )
    };
    let registry = lookup.devices.current();
    let Some(device) = registry.get(identity) else {
        return -1;
    };
    let key = device.key();
    // SAFETY: `ssl` is the context in handshake; Mbed TLS copies the key.
    if unsafe { mbedtls_sys::ssl_set_hs_psk(ssl, key.as_ptr(), key.len()) } != 0 {
        return -1;
    }
    *lookup
        .identified
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(device.clone());
    0
}

impl Server {
    /// DTLS 1.2 only, RFC 7252's mandatory `TLS_PSK_WITH_AES_128_CCM_8` first and
    /// `TLS_PSK_WITH_AES_128_GCM_SHA256` beside it, keys from `devices`, stateless cookies
    /// (an HMAC of the peer's address and the time, under a key made here), no renegotiation.
    pub(crate) fn new(devices: Devices) -> Result<Server, SetupError> {
        let rng = Arc::new(CtrDrbg::new(Arc::new(OsEntropy::new()), None)?);
        let mut config = Config::new(Endpoint::Server, Transport::Datagram, Preset::Default);
        config.set_rng(rng.clone());
        config.set_min_version(Version::Tls1_2)?;
        config.set_max_version(Version::Tls1_2)?;
        config.set_ciphersuites(Arc::new(vec![
            CipherSuite::PskWithAes128Ccm8.into(),
            CipherSuite::PskWithAes128GcmSha256.into(),
            0,
        ]));
        config.set_dtls_cookies(Arc::new(CookieContext::new(rng)?));
        let psk = Arc::new(PskLookup {
            devices,
            identified: Mutex::new(None),
        });
        // SAFETY: the callback reads `psk` through this pointer, only while a session's context
        // handshakes; `Server` and each `Session` hold the `Arc`, and a session drops its
        // context before its `Arc` (field order).
        unsafe {
            mbedtls_sys::ssl_conf_psk_cb(
                (&mut config).into(),
                Some(psk_callback),
                Arc::as_ptr(&psk) as *mut c_void,
            );
        }
        Ok(Server {
            config: Arc::new(config),
            psk,
        })
    }

    /// A fresh session, waiting for a ClientHello.
    pub(crate) fn session(&self) -> Session {
        let mut ctx = Context::new(self.config.clone());
        // Mbed TLS needs a timer for DTLS: it times its handshake retransmissions with it.
        ctx.set_timer_callback(Box::new(Timer::new()));
        Session {
            ctx,
            _psk: self.psk.clone(),
        }
    }

    /// Gives `datagram` from `peer` to `session`, which answers a ClientHello without a valid
    /// cookie with a HelloVerifyRequest and forgets it, or starts the handshake for one with a
    /// valid cookie. Anything else is dropped.
    pub(crate) fn hello(&self, session: &mut Session, peer: SocketAddr, datagram: &[u8]) -> Hello {
        session
            .ctx
            .set_client_transport_id_once(&transport_id(peer));
        let result = session.ctx.establish(Datagrams::with(datagram), None);
        match result {
            Err(e) if e.high_level() == Some(codes::SslHelloVerifyRequired) => Hello::Verify,
            Err(e) if e.high_level() == Some(codes::SslWantRead) && session.past_hello() => {
                Hello::Verified
            }
            _ => Hello::Dropped,
        }
    }

    /// Gives `datagram` to a session in handshake. The device is known once its
    /// ClientKeyExchange named a registered identity; it comes back with the step.
    pub(crate) fn handshake(
        &self,
        session: &mut Session,
        datagram: &[u8],
    ) -> (Step, Option<Arc<Device>>) {
        self.take_identified();
        let step = match session.feed(datagram).map(|ctx| ctx.handshake()) {
            Some(Ok(())) => Step::Done,
            Some(Err(e)) if e.high_level() == Some(codes::SslWantRead) => Step::More,
            Some(Err(e)) => Step::Failed(e.to_string()),
            None => Step::Failed("the session has ended".to_owned()),
        };
        (step, self.take_identified())
    }

    fn take_identified(&self) -> Option<Arc<Device>> {
        self.psk
            .identified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The client's transport identity the cookies are bound to: its address and port.
fn transport_id(peer: SocketAddr) -> Vec<u8> {
    let mut id = match peer.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    id.extend_from_slice(&peer.port().to_be_bytes());
    id
}

/// What a datagram to a waiting session did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hello {
    /// A ClientHello without a valid cookie: a HelloVerifyRequest was written, nothing kept.
    Verify,
    /// A ClientHello with a valid cookie: the handshake has begun.
    Verified,
    /// Not a ClientHello, or a broken one.
    Dropped,
}

/// What a datagram to a session in handshake did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Done,
    More,
    Failed(String),
}

/// What a datagram to an established session held.
#[derive(Debug, Default)]
pub(crate) struct Records {
    pub(crate) messages: Vec<Vec<u8>>,
    /// The peer closed the session, or it broke.
    pub(crate) closed: bool,
}

/// One DTLS session of the server.
pub(crate) struct Session {
    ctx: Context<Datagrams>,
    /// What the context's PSK callback reads; dropped after the context.
    _psk: Arc<PskLookup>,
}

// SAFETY: see `Server`; a session is used under the sessions' lock, by one thread at a time.
unsafe impl Send for Session {}

impl Session {
    fn feed(&mut self, datagram: &[u8]) -> Option<&mut Context<Datagrams>> {
        self.ctx.io_mut()?.incoming = Some(datagram.to_vec());
        Some(&mut self.ctx)
    }

    /// Whether the handshake has gone past the ClientHello (so its cookie was valid).
    fn past_hello(&self) -> bool {
        let ssl: *const mbedtls_sys::ssl_context = (&self.ctx).into();
        // SAFETY: the context is valid while `self` is; `state` is a plain integer field.
        let state = unsafe { (*ssl).state };
        state > mbedtls_sys::SSL_CLIENT_HELLO as c_int
    }

    /// The CoAP messages in `datagram`, one per record.
    pub(crate) fn read(&mut self, datagram: &[u8], buf: &mut [u8]) -> Records {
        let mut records = Records::default();
        let Some(ctx) = self.feed(datagram) else {
            records.closed = true;
            return records;
        };
        loop {
            match Io::recv(ctx, buf) {
                Ok(0) => break,
                Ok(n) => records.messages.push(buf[..n].to_vec()),
                Err(e) if e.high_level() == Some(codes::SslWantRead) => break,
                Err(e) => {
                    if e.high_level() != Some(codes::SslPeerCloseNotify) {
                        tracing::debug!(error = %e, "DTLS session ended");
                    }
                    records.closed = true;
                    break;
                }
            }
        }
        records
    }

    /// Encrypts `message` into one record. False if the session cannot write.
    pub(crate) fn write(&mut self, message: &[u8]) -> bool {
        Io::send(&mut self.ctx, message).is_ok_and(|n| n == message.len())
    }

    /// The datagrams written since the last call, in order.
    pub(crate) fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        self.ctx
            .io_mut()
            .map(|io| std::mem::take(&mut io.outgoing))
            .unwrap_or_default()
    }

    /// The largest payload one record of this session carries.
    #[cfg(test)]
    pub(crate) fn max_out_payload(&self) -> usize {
        let ssl: *const mbedtls_sys::ssl_context = (&self.ctx).into();
        // SAFETY: the context is valid while `self` is.
        let n = unsafe { mbedtls_sys::ssl_get_max_out_record_payload(ssl) };
        usize::try_from(n).unwrap_or(0)
    }
}

/// The datagram "socket" under a session: Mbed TLS reads the one datagram fed to it, whole, and
/// each of its writes is one datagram to send, collected for the caller's batched send.
#[derive(Debug, Default)]
struct Datagrams {
    incoming: Option<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Datagrams {
    fn with(datagram: &[u8]) -> Datagrams {
        Datagrams {
            incoming: Some(datagram.to_vec()),
            outgoing: Vec::new(),
        }
    }
}

impl Io for Datagrams {
    fn recv(&mut self, buf: &mut [u8]) -> mbedtls::Result<usize> {
        match self.incoming.take() {
            // A datagram longer than the record buffer is cut, fails its record's check and is
            // dropped, as a datagram socket does.
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(codes::SslWantRead.into()),
        }
    }

    fn send(&mut self, buf: &[u8]) -> mbedtls::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Registry;
    use iot_common::dtls::{self as client_dtls, Session as ClientSession};
    use openssl::ssl::{ErrorCode, SslContext};

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn server() -> Server {
        let device = Device::new("dht-1", "lab", KEY.as_bytes()).expect("device");
        Server::new(Devices::new(Registry::new([device]))).expect("server")
    }

    /// The peer is OpenSSL, as sensor-sim is.
    fn client(identity: &'static str, key: &'static str) -> ClientSession {
        let mut ctx = client_dtls::context_builder().expect("client context");
        ctx.set_psk_client_callback(move |_, _hint, id, psk| {
            id[..identity.len()].copy_from_slice(identity.as_bytes());
            id[identity.len()] = 0;
            psk[..key.len()].copy_from_slice(key.as_bytes());
            Ok(key.len())
        });
        let ctx: SslContext = ctx.build();
        client_dtls::session(&ctx).expect("client session")
    }

    fn client_step(client: &mut ClientSession, datagrams: Vec<Vec<u8>>) {
        for d in datagrams {
            client.get_mut().feed(&d);
            if let Err(e) = client.do_handshake() {
                assert_eq!(e.code(), ErrorCode::WANT_READ, "{e}");
            }
        }
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40_000))
    }

    /// Cookie exchange, then the handshake; the session and the device it found.
    fn handshake(
        server: &Server,
        client: &mut ClientSession,
    ) -> (Session, Step, Option<Arc<Device>>) {
        let mut listener = server.session();
        assert!(client.connect().is_err(), "the client waits for an answer");
        let hello = client.get_mut().take_outgoing().remove(0);
        assert_eq!(server.hello(&mut listener, peer(), &hello), Hello::Verify);
        let verify = listener.take_outgoing();
        assert_eq!(verify.len(), 1);
        assert!(
            verify[0].len() < hello.len(),
            "no answer bigger than the request"
        );
        client_step(client, verify);
        let hello = client.get_mut().take_outgoing().remove(0);
        assert_eq!(server.hello(&mut listener, peer(), &hello), Hello::Verified);
        let mut session = listener;
        let mut found = None;
        let mut step = Step::More;
        for _ in 0..4 {
            client_step(client, session.take_outgoing());
            for d in client.get_mut().take_outgoing() {
                let (s, device) = server.handshake(&mut session, &d);
                found = found.or(device);
                step = s;
            }
            if step != Step::More {
                break;
            }
        }
        client_step(client, session.take_outgoing());
        (session, step, found)
    }

    #[test]
    fn an_openssl_client_handshakes_after_a_cookie_and_data_flows_both_ways() {
        let server = server();
        let mut client = client("dht-1", KEY);
        let (mut session, step, device) = handshake(&server, &mut client);
        assert_eq!(step, Step::Done);
        assert_eq!(device.map(|d| d.name.to_string()).as_deref(), Some("dht-1"));
        assert_eq!(
            client.ssl().current_cipher().map(|c| c.name()),
            Some("PSK-AES128-CCM8"),
            "RFC 7252's mandatory suite comes first"
        );
        client.ssl_write(b"reading").expect("write");
        let records = client.get_mut().take_outgoing();
        let mut buf = [0u8; 2048];
        let got = session.read(&records[0], &mut buf);
        assert_eq!(got.messages, vec![b"reading".to_vec()]);
        assert!(!got.closed);
        assert!(session.write(b"2.04"));
        client_step(&mut client, Vec::new());
        for d in session.take_outgoing() {
            client.get_mut().feed(&d);
        }
        let n = client.ssl_read(&mut buf).expect("answer");
        assert_eq!(&buf[..n], b"2.04");
    }

    #[test]
    fn the_build_has_the_small_record_buffers() {
        // A default Mbed TLS build writes 16 KB records and costs 35 KB a session: this fails
        // if the C flags of .cargo/config.toml did not reach it.
        let server = server();
        let mut client = client("dht-1", KEY);
        let (session, step, _) = handshake(&server, &mut client);
        assert_eq!(step, Step::Done);
        assert_eq!(session.max_out_payload(), 1024);
    }

    #[test]
    fn keys_of_every_length_the_registry_takes_work() {
        // Mbed TLS's default limit is 32 bytes; the build raises it to the registry's 64.
        for len in [crate::devices::MIN_KEY_LEN, 32, crate::devices::MAX_KEY_LEN] {
            let key: &'static str = "k".repeat(len).leak();
            let device = Device::new("dht-1", "lab", key.as_bytes()).expect("device");
            let server = Server::new(Devices::new(Registry::new([device]))).expect("server");
            let mut client = client("dht-1", key);
            let (_, step, device) = handshake(&server, &mut client);
            assert_eq!(step, Step::Done, "a key of {len} bytes");
            assert!(device.is_some());
        }
    }

    #[test]
    fn a_wrong_key_or_an_unknown_identity_never_finishes() {
        let server = server();
        for (identity, key) in [
            ("dht-1", "fedcba9876543210fedcba9876543210"),
            ("dht-9", KEY),
        ] {
            let mut client = client(identity, key);
            let (_, step, _) = handshake(&server, &mut client);
            assert!(matches!(step, Step::Failed(_)), "{identity}: {step:?}");
            assert!(!client.ssl().is_init_finished());
        }
    }

    #[test]
    fn garbage_gets_no_answer() {
        let server = server();
        let mut listener = server.session();
        for datagram in [
            &[0x16, 0xfe, 0xfd, 0, 0, 1, 2, 3][..],
            &[0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4][..],
            &[][..],
        ] {
            assert_eq!(
                server.hello(&mut listener, peer(), datagram),
                Hello::Dropped
            );
            assert!(listener.take_outgoing().is_empty());
        }
    }
}
