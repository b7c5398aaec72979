//! DTLS 1.2 with pre-shared keys (RFC 7252 §9.1.3.1), by OpenSSL, over the batched UDP sockets
//! of [`crate::udp`]: the clients' side (sensor-sim, the tests' devices). coap-server's side is
//! Mbed TLS (its `secure::mbed`), so the two libraries are tested against each other.
//!
//! OpenSSL does the records, the handshake and the cryptography; this module only carries its
//! datagrams. A session is an [`openssl::ssl::SslStream`] over a [`DatagramIo`], which hands
//! OpenSSL one received datagram at a time and collects what it writes as whole datagrams, so
//! the caller sends them in its own batches (`sendmmsg`) instead of one system call each.
//!
//! OpenSSL calls that the `openssl` crate does not wrap are declared here: the stateless cookie
//! exchange of `DTLSv1_listen` ([`listen`], for the OpenSSL servers of the clients' tests) and
//! the handshake's retransmission timer ([`timeout`], [`handle_timeout`]). They are OpenSSL's
//! own functions; nothing of DTLS is written here.

use std::ffi::{c_int, c_long, c_void};
use std::io::{self, Read, Write};
use std::time::Duration;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ssl::{
    SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslRef, SslStream, SslVersion,
};

/// The suites offered, best first: RFC 7252's mandatory `TLS_PSK_WITH_AES_128_CCM_8`, and
/// `TLS_PSK_WITH_AES_128_GCM_SHA256` for peers that have AES-GCM rather than CCM.
pub const CIPHERS: &str = "PSK-AES128-CCM8:PSK-AES128-GCM-SHA256";

/// Bytes of one datagram DTLS may write: the IPv6 minimum MTU less the IP and UDP headers, so no
/// record is ever fragmented on the way (RFC 6347 §4.1.1).
pub const MTU: u32 = 1280 - 48;

/// A DTLS session over datagrams the caller moves.
pub type Session = SslStream<DatagramIo>;

/// The datagram "socket" under a [`Session`]: [`Self::feed`] gives it the next received
/// datagram, which OpenSSL reads whole; every write of OpenSSL's is one datagram to send,
/// collected until [`Self::take_outgoing`].
#[derive(Debug, Default)]
pub struct DatagramIo {
    incoming: Option<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl DatagramIo {
    /// Gives OpenSSL `datagram` to read next (replacing one it did not read).
    pub fn feed(&mut self, datagram: &[u8]) {
        self.incoming = Some(datagram.to_vec());
    }

    /// The datagrams OpenSSL wrote since the last call, in order.
    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outgoing)
    }

    /// Whether OpenSSL wrote anything since the last [`Self::take_outgoing`].
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }
}

impl Read for DatagramIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.take() {
            Some(datagram) => {
                // OpenSSL reads with a buffer larger than any record; a longer datagram is
                // cut, fails its record's check and is dropped, as a datagram socket does.
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DatagramIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A context builder with what both sides share: DTLS 1.2 only, the PSK suites only, records
/// that fit [`MTU`], and buffers released while a session is idle (an established session then
/// costs a few KB instead of tens).
pub fn context_builder() -> Result<SslContextBuilder, ErrorStack> {
    let mut ctx = SslContext::builder(SslMethod::dtls())?;
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    ctx.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    ctx.set_cipher_list(CIPHERS)?;
    // CCM_8's 64-bit tag puts it below OpenSSL's default security level, and a PSK suite has no
    // certificate or key exchange whose strength the level would judge; the suite list above
    // is the policy.
    ctx.set_security_level(0);
    ctx.set_mode(SslMode::RELEASE_BUFFERS);
    ctx.set_options(SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    Ok(ctx)
}

/// Makes a new session of `ctx` over a fresh [`DatagramIo`], with its MTU set.
pub fn session(ctx: &SslContext) -> Result<Session, ErrorStack> {
    let mut ssl = openssl::ssl::Ssl::new(ctx)?;
    ssl.set_mtu(MTU)?;
    SslStream::new(ssl, DatagramIo::default())
}

/// What `DTLSv1_listen` made of one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Listen {
    /// A ClientHello with a valid cookie: the session may go on with the handshake.
    Verified,
    /// Anything else: a HelloVerifyRequest was written (for a ClientHello without a valid
    /// cookie) or the datagram was dropped. Nothing about the peer is kept.
    NotYet,
}

// OpenSSL functions and control codes the `openssl` crate does not wrap (ssl.h, bio.h).
unsafe extern "C" {
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, client: *mut c_void) -> c_int;
    fn BIO_ADDR_new() -> *mut c_void;
    fn BIO_ADDR_free(addr: *mut c_void);
}
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

/// Runs OpenSSL's stateless cookie exchange on the datagram fed to `session`'s [`DatagramIo`]:
/// answers a ClientHello without a valid cookie with a HelloVerifyRequest and keeps no state
/// for it. The context needs cookie callbacks (`set_cookie_generate_cb`/`verify_cb`).
pub fn listen(session: &mut Session) -> Result<Listen, ErrorStack> {
    // SAFETY: the SSL is valid for the call; the address is freed below and only written to by
    // OpenSSL (the peer's address, which our BIO does not know, so it is cleared).
    let outcome = unsafe {
        let addr = BIO_ADDR_new();
        if addr.is_null() {
            return Err(ErrorStack::get());
        }
        let r = DTLSv1_listen(session.ssl().as_ptr(), addr);
        BIO_ADDR_free(addr);
        r
    };
    // OpenSSL's error queue is per thread: what `DTLSv1_listen` left in it (a record that was
    // not a ClientHello, say) would be read as the error of the next session's call.
    let errors = ErrorStack::get();
    match outcome {
        1 => Ok(Listen::Verified),
        0 => Ok(Listen::NotYet),
        _ => Err(errors),
    }
}

/// When the handshake's retransmission timer of `ssl` fires next, if it runs.
pub fn timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = openssl_sys_timeval::default();
    // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one struct timeval through the pointer.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut openssl_sys_timeval).cast(),
        )
    };
    (running > 0).then(|| {
        Duration::from_secs(tv.tv_sec.max(0) as u64)
            + Duration::from_micros(tv.tv_usec.max(0) as u64)
    })
}

/// Lets OpenSSL retransmit its last handshake flight if its timer has fired. False once it has
/// given up (too many retransmissions) or on error.
pub fn handle_timeout(ssl: &SslRef) -> bool {
    // SAFETY: DTLS_CTRL_HANDLE_TIMEOUT takes no argument.
    let r = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        )
    };
    r >= 0
}

/// `struct timeval` as OpenSSL's DTLS timer gives it (Linux: two longs).
#[repr(C)]
#[derive(Default)]
#[allow(non_camel_case_types)]
struct openssl_sys_timeval {
    tv_sec: c_long,
    tv_usec: c_long,
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::ErrorCode;

    const IDENTITY: &[u8] = b"dht-1";
    const KEY: &[u8] = b"0123456789abcdef";

    fn server_context(cookie: &'static [u8]) -> SslContext {
        let mut ctx = context_builder().expect("server context");
        ctx.set_psk_server_callback(|_, identity, psk| match identity {
            Some(IDENTITY) => {
                psk[..KEY.len()].copy_from_slice(KEY);
                Ok(KEY.len())
            }
            _ => Ok(0),
        });
        ctx.set_cookie_generate_cb(move |_, buf| {
            buf[..cookie.len()].copy_from_slice(cookie);
            Ok(cookie.len())
        });
        ctx.set_cookie_verify_cb(move |_, got| got == cookie);
        ctx.build()
    }

    fn client_context(key: &'static [u8]) -> SslContext {
        let mut ctx = context_builder().expect("client context");
        ctx.set_psk_client_callback(move |_, _hint, identity, psk| {
            identity[..IDENTITY.len()].copy_from_slice(IDENTITY);
            identity[IDENTITY.len()] = 0;
            psk[..key.len()].copy_from_slice(key);
            Ok(key.len())
        });
        ctx.build()
    }

    /// Moves every datagram `from` wrote to `to`, one read each; how many moved.
    fn deliver(from: &mut Session, to: &mut Session, step: impl Fn(&mut Session)) -> usize {
        let datagrams = from.get_mut().take_outgoing();
        for d in &datagrams {
            to.get_mut().feed(d);
            step(to);
        }
        datagrams.len()
    }

    fn wants_more(r: Result<(), openssl::ssl::Error>) {
        if let Err(e) = r {
            assert_eq!(e.code(), ErrorCode::WANT_READ, "{e}");
        }
    }

    /// A full exchange: ClientHello, HelloVerifyRequest by `listen`, the verified ClientHello,
    /// the rest of the handshake, then application data both ways.
    fn handshake(key: &'static [u8]) -> Result<(Session, Session), String> {
        let server_ctx = server_context(b"cookie-for-this-peer");
        let mut client = session(&client_context(key)).expect("client");
        let mut server = session(&server_ctx).expect("server");
        wants_more(client.connect());
        let hello = client.get_mut().take_outgoing();
        server.get_mut().feed(&hello[0]);
        assert_eq!(listen(&mut server).expect("listen"), Listen::NotYet);
        // The HelloVerifyRequest goes back; the client sends its ClientHello with the cookie.
        deliver(&mut server, &mut client, |c| wants_more(c.do_handshake()));
        let hello = client.get_mut().take_outgoing();
        let mut verified = session(&server_ctx).expect("listener");
        verified.get_mut().feed(&hello[0]);
        assert_eq!(listen(&mut verified).expect("listen"), Listen::Verified);
        server = verified;
        wants_more(server.accept());
        for _ in 0..4 {
            deliver(&mut server, &mut client, |c| wants_more(c.do_handshake()));
            deliver(&mut client, &mut server, |s| wants_more(s.do_handshake()));
        }
        if server.ssl().is_init_finished() && client.ssl().is_init_finished() {
            Ok((client, server))
        } else {
            Err(format!("{:?}", server.ssl().state_string_long()))
        }
    }

    #[test]
    fn a_psk_handshake_with_a_cookie_exchange_carries_data_both_ways() {
        let (mut client, mut server) = handshake(KEY).expect("handshake");
        assert_eq!(server.ssl().psk_identity(), Some(IDENTITY));
        client.ssl_write(b"reading").expect("write");
        let records = client.get_mut().take_outgoing();
        assert_eq!(records.len(), 1, "one record, one datagram");
        server.get_mut().feed(&records[0]);
        let mut buf = [0u8; 64];
        let n = server.ssl_read(&mut buf).expect("read");
        assert_eq!(&buf[..n], b"reading");
        server.ssl_write(b"2.04").expect("answer");
        let answer = server.get_mut().take_outgoing();
        client.get_mut().feed(&answer[0]);
        let n = client.ssl_read(&mut buf).expect("read answer");
        assert_eq!(&buf[..n], b"2.04");
        let suite = server.ssl().current_cipher().map(|c| c.name());
        assert_eq!(
            suite,
            Some("PSK-AES128-CCM8"),
            "the mandatory suite comes first"
        );
    }

    #[test]
    fn a_wrong_key_never_finishes_the_handshake() {
        assert!(handshake(b"fedcba9876543210").is_err());
    }

    #[test]
    fn a_garbage_datagram_gets_no_answer_and_no_state() {
        let mut server = session(&server_context(b"c")).expect("server");
        server.get_mut().feed(&[0x16, 0xfe, 0xfd, 0, 0, 1, 2, 3]);
        assert_eq!(listen(&mut server).expect("listen"), Listen::NotYet);
        assert!(!server.get_mut().has_outgoing());
    }
}
