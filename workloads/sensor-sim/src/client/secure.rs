//! The DTLS side of a client endpoint (RFC 7252 §9.1.3.1, pre-shared keys): the handshake,
//! driven by OpenSSL's retransmission timer and retried with back-off, CoAP messages sealed into
//! records and opened from them, and the session given up when it has failed.
//!
//! OpenSSL does DTLS itself (through [`iot_common::dtls`]); this module decides when to start a
//! handshake, how long one may take and what its failure means.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iot_common::dtls::{self, Session};
use openssl::ssl::{ErrorCode, SslContext};

/// A device: its identity (the sensor's name) and where its key comes from.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub identity: String,
    pub key: KeySource,
}

#[derive(Clone)]
pub enum KeySource {
    /// The key itself; its bytes are the pre-shared key.
    Given(String),
    /// The file `<dir>/<identity>`, read at every handshake: a mounted Secret that kubelet
    /// rewrites when the key is rotated, so the next handshake uses the new key.
    Dir(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Given(_) => f.write_str("Given(<redacted>)"),
            KeySource::Dir(dir) => f.debug_tuple("Dir").field(dir).finish(),
        }
    }
}

/// Bytes of a key, at least: 128 bits.
const MIN_KEY: usize = 16;
/// Bytes of a key, at most: what OpenSSL's PSK callback has room for (PSK_MAX_PSK_LEN).
const MAX_KEY: usize = 256;
/// Bytes of an identity, at most (PSK_MAX_IDENTITY_LEN of OpenSSL 1.1; 3.x allows more).
const MAX_IDENTITY: usize = 128;

impl Credentials {
    /// Whether the identity and its key, as they are now, can be used.
    pub fn check(&self) -> Result<(), HandshakeError> {
        self.key().map(|_| ())
    }

    /// The key as it is now: given, or read from its file less one trailing newline.
    fn key(&self) -> Result<Vec<u8>, HandshakeError> {
        let identity = &self.identity;
        let plain_name = !identity.is_empty()
            && identity.len() <= MAX_IDENTITY
            && !identity.contains(['/', '\0'])
            && identity != "."
            && identity != "..";
        if !plain_name {
            return Err(HandshakeError::Identity(identity.clone()));
        }
        let key = match &self.key {
            KeySource::Given(key) => key.as_bytes().to_vec(),
            KeySource::Dir(dir) => read_key(&dir.join(identity))?,
        };
        if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
            return Err(HandshakeError::KeyLength {
                identity: identity.clone(),
                len: key.len(),
            });
        }
        Ok(key)
    }
}

/// A key file's content less one trailing newline (`echo` and most editors add one).
fn read_key(path: &Path) -> Result<Vec<u8>, HandshakeError> {
    // A few bytes on a tmpfs, once per handshake: not worth a blocking-pool thread.
    let mut key = std::fs::read(path).map_err(|e| HandshakeError::NoKey {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    Ok(key)
}

/// The identities of a directory of key files, in sorted order: the names of its files, less
/// hidden entries (a mounted Secret's `..data` and its timestamped directories).
pub fn identities_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // A Secret's keys are symbolic links into `..data`: follow them.
        let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if is_file && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HandshakeError {
    #[error("no key: cannot read {path}: {reason}")]
    NoKey { path: String, reason: String },
    #[error("the key of {identity} has {len} bytes; a key has {MIN_KEY} to {MAX_KEY}")]
    KeyLength { identity: String, len: usize },
    #[error("{0:?} cannot be an identity: 1 to {MAX_IDENTITY} bytes, no '/'")]
    Identity(String),
    #[error(
        "the server ended the handshake with an alert ({0}): it does not know this identity or \
         refuses its key"
    )]
    Alert(String),
    #[error("no answer from the server within {0:?}: is it listening for DTLS on this port?")]
    Silence(Duration),
    #[error(
        "the server answered but the handshake did not finish within {0:?}: a wrong key for \
         this identity, most likely (the server drops what the wrong key protects)"
    )]
    Unfinished(Duration),
    #[error("OpenSSL: {0}")]
    Tls(String),
}

/// How handshakes are tried.
#[derive(Clone, Copy, Debug)]
pub struct HandshakePolicy {
    /// How long one handshake may take, OpenSSL's retransmissions of its flights included.
    pub timeout: Duration,
    /// Failed handshakes in a row after which the exchanges waiting for a session fail (and
    /// after each further failure); handshakes go on being tried while exchanges wait.
    pub attempts: u32,
    /// The pause after a failed handshake, doubled after each further one up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for HandshakePolicy {
    fn default() -> Self {
        HandshakePolicy {
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl HandshakePolicy {
    /// The pause after the `failures`-th failure in a row.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// What an endpoint speaking DTLS is given.
#[derive(Clone, Debug)]
pub struct Dtls {
    pub credentials: Credentials,
    pub policy: HandshakePolicy,
}

/// Where a handshake stands after a step.
#[derive(Debug, PartialEq)]
pub enum Handshake {
    Pending,
    Established,
    /// The attempt failed; the next may start at [`Secure::retry_at`]. `give_up`: the
    /// exchanges waiting for a session should fail now (the policy's attempts are used up).
    Failed {
        error: HandshakeError,
        give_up: bool,
    },
}

/// What reading the records of a session gave.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// A CoAP message of this many bytes is in the buffer.
    Message(usize),
    /// Nothing more for now (records that failed their check were dropped).
    Done,
    /// The session is over: the server ended it (an alert, or close_notify).
    Dead(String),
}

enum State {
    /// No session; the next handshake may start at `retry_at`.
    Down {
        retry_at: Instant,
    },
    Handshaking {
        session: Session,
        /// When this attempt is given up.
        deadline: Instant,
        /// Whether anything came from the server during this attempt.
        heard: bool,
    },
    Up(Session),
}

/// One endpoint's DTLS session, or the lack of one.
pub struct Secure {
    dtls: Dtls,
    state: State,
    /// Handshakes failed in a row.
    failures: u32,
    /// The failure last logged as a warning: a streak of one failure is logged once.
    reported: Option<HandshakeError>,
}

impl Secure {
    pub fn new(dtls: Dtls) -> Self {
        Secure {
            dtls,
            state: State::Down {
                retry_at: Instant::now(),
            },
            failures: 0,
            reported: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.dtls.credentials.identity
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// While there is no session: when the next handshake may start.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.state {
            State::Down { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    /// While a handshake is under way: when [`Self::on_timer`] is due (OpenSSL's next
    /// retransmission, or the attempt's deadline).
    pub fn handshake_timer(&self, now: Instant) -> Option<Instant> {
        match &self.state {
            State::Handshaking {
                session, deadline, ..
            } => Some(dtls::timeout(session.ssl()).map_or(*deadline, |t| (now + t).min(*deadline))),
            _ => None,
        }
    }

    /// Starts a handshake (reading the key now); its first flight is in [`Self::outgoing`].
    pub fn begin(&mut self, now: Instant) -> Handshake {
        let key = match self.dtls.credentials.key() {
            Ok(key) => key,
            Err(e) => return self.fail(e, now),
        };
        let session = client_context(self.identity().as_bytes().to_vec(), key)
            .and_then(|ctx| dtls::session(&ctx));
        let mut session = match session {
            Ok(s) => s,
            Err(e) => return self.fail(HandshakeError::Tls(e.to_string()), now),
        };
        match session.connect() {
            Err(e) if e.code() == ErrorCode::WANT_READ => {}
            Ok(()) => return self.fail(HandshakeError::Tls("finished at once".into()), now),
            Err(e) => return self.fail(HandshakeError::Tls(reasons(&e)), now),
        }
        self.state = State::Handshaking {
            session,
            deadline: now + self.dtls.policy.timeout,
            heard: false,
        };
        Handshake::Pending
    }

    /// The handshake's timer fired: OpenSSL retransmits its last flight, or the attempt ends.
    pub fn on_timer(&mut self, now: Instant) -> Handshake {
        let State::Handshaking {
            session,
            deadline,
            heard,
        } = &mut self.state
        else {
            return Handshake::Pending;
        };
        if now < *deadline && dtls::handle_timeout(session.ssl()) {
            return Handshake::Pending;
        }
        let timeout = self.dtls.policy.timeout;
        let error = match heard {
            true => HandshakeError::Unfinished(timeout),
            false => HandshakeError::Silence(timeout),
        };
        self.fail(error, now)
    }

    /// A datagram from the server. During a handshake, where it stands after it; with a
    /// session, `None`: the datagram's records are then taken with [`Self::read`].
    pub fn on_datagram(&mut self, datagram: &[u8], now: Instant) -> Option<Handshake> {
        let (session, heard) = match &mut self.state {
            State::Down { .. } => return None,
            State::Up(session) => {
                session.get_mut().feed(datagram);
                return None;
            }
            State::Handshaking { session, heard, .. } => (session, heard),
        };
        *heard = true;
        session.get_mut().feed(datagram);
        match session.do_handshake() {
            Err(e) if e.code() == ErrorCode::WANT_READ => Some(Handshake::Pending),
            Err(e) => {
                let reason = reasons(&e);
                let error = match reason.contains("alert") {
                    true => HandshakeError::Alert(reason),
                    false => HandshakeError::Tls(reason),
                };
                Some(self.fail(error, now))
            }
            Ok(()) => {
                let placeholder = State::Down { retry_at: now };
                if let State::Handshaking { session, .. } =
                    std::mem::replace(&mut self.state, placeholder)
                {
                    self.state = State::Up(session);
                }
                self.succeeded();
                Some(Handshake::Established)
            }
        }
    }

    /// The next CoAP message of the datagrams fed to the session, into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> Read {
        let State::Up(session) = &mut self.state else {
            return Read::Done;
        };
        match session.ssl_read(buf) {
            Ok(n) => Read::Message(n),
            Err(e) if e.code() == ErrorCode::WANT_READ => Read::Done,
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                Read::Dead("the server closed the session".into())
            }
            Err(e) => Read::Dead(reasons(&e)),
        }
    }

    /// Seals `message` into one record (one datagram, in [`Self::outgoing`]). False when there
    /// is no session or OpenSSL refused it; the exchange's retransmission covers that.
    pub fn seal(&mut self, message: &[u8]) -> bool {
        match &mut self.state {
            State::Up(session) => session.ssl_write(message).is_ok(),
            _ => false,
        }
    }

    /// The datagrams OpenSSL wrote since the last call (handshake flights, records, alerts).
    pub fn outgoing(&mut self) -> Vec<Vec<u8>> {
        match &mut self.state {
            State::Up(session) | State::Handshaking { session, .. } => {
                session.get_mut().take_outgoing()
            }
            State::Down { .. } => Vec::new(),
        }
    }

    /// Gives the session up (it looks dead): the next handshake may start at once.
    pub fn drop_session(&mut self, now: Instant, why: &str) {
        tracing::info!(identity = %self.identity(), why, "DTLS session given up; handshaking again");
        self.state = State::Down { retry_at: now };
    }

    /// Forgets the session (ended with [`Self::close`]) when the endpoint moves to a new
    /// socket: DTLS 1.2 binds a session to the address, so the next exchange handshakes anew.
    /// A pause after failed handshakes still holds.
    pub fn forget(&mut self, now: Instant) {
        if !matches!(self.state, State::Down { .. }) {
            self.state = State::Down { retry_at: now };
        }
    }

    /// Ends the session politely (close_notify, in [`Self::outgoing`]), so that the server
    /// can forget it at once.
    pub fn close(&mut self) {
        if let State::Up(session) = &mut self.state {
            let _ = session.shutdown();
        }
    }

    fn succeeded(&mut self) {
        match self.failures {
            0 => tracing::debug!(identity = %self.identity(), "DTLS session established"),
            n => {
                tracing::info!(identity = %self.identity(), failed_before = n, "DTLS session established")
            }
        }
        self.failures = 0;
        self.reported = None;
    }

    fn fail(&mut self, error: HandshakeError, now: Instant) -> Handshake {
        self.failures = self.failures.saturating_add(1);
        let pause = self.dtls.policy.backoff(self.failures);
        self.state = State::Down {
            retry_at: now + pause,
        };
        if self.reported.as_ref() == Some(&error) {
            tracing::debug!(identity = %self.identity(), %error, retry_in = ?pause, "DTLS handshake failed again");
        } else {
            tracing::warn!(identity = %self.identity(), %error, retry_in = ?pause, "DTLS handshake failed; retrying with back-off (the same failure again is logged at debug level)");
            self.reported = Some(error.clone());
        }
        Handshake::Failed {
            error,
            give_up: self.failures >= self.dtls.policy.attempts,
        }
    }
}

/// A client context that offers `identity` with `key`, whatever identity hint the server sends.
fn client_context(
    identity: Vec<u8>,
    key: Vec<u8>,
) -> Result<SslContext, openssl::error::ErrorStack> {
    let mut ctx = dtls::context_builder()?;
    ctx.set_psk_client_callback(move |_, _hint, identity_out, psk_out| {
        // OpenSSL's buffers are larger than what `Credentials::key` lets through; a check
        // failing here ends the handshake instead of writing past them.
        if identity.len() >= identity_out.len() || key.len() > psk_out.len() {
            return Ok(0);
        }
        identity_out[..identity.len()].copy_from_slice(&identity);
        identity_out[identity.len()] = 0;
        psk_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    Ok(ctx.build())
}

/// What OpenSSL says went wrong, its reasons only.
fn reasons(e: &openssl::ssl::Error) -> String {
    let reasons: Vec<&str> = e
        .ssl_error()
        .map(|stack| stack.errors().iter().filter_map(|e| e.reason()).collect())
        .unwrap_or_default();
    match reasons.is_empty() {
        true => e.to_string(),
        false => reasons.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_dir(dir: &Path, identity: &str) -> Credentials {
        Credentials {
            identity: identity.into(),
            key: KeySource::Dir(dir.to_path_buf()),
        }
    }

    #[test]
    fn a_key_file_loses_one_trailing_newline_and_is_read_again_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let creds = in_dir(dir.path(), "sim-1");
        std::fs::write(dir.path().join("sim-1"), "0123456789abcdef\n").unwrap();
        assert_eq!(creds.key().unwrap(), b"0123456789abcdef");
        std::fs::write(dir.path().join("sim-1"), "fedcba9876543210 \n\n").unwrap();
        assert_eq!(creds.key().unwrap(), b"fedcba9876543210 \n");
    }

    #[test]
    fn a_missing_short_or_misnamed_key_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            in_dir(dir.path(), "sim-1").key(),
            Err(HandshakeError::NoKey { .. })
        ));
        std::fs::write(dir.path().join("sim-2"), "short").unwrap();
        assert_eq!(
            in_dir(dir.path(), "sim-2").key(),
            Err(HandshakeError::KeyLength {
                identity: "sim-2".into(),
                len: 5
            })
        );
        assert!(matches!(
            in_dir(dir.path(), "../etc/passwd").key(),
            Err(HandshakeError::Identity(_))
        ));
    }

    #[test]
    fn identities_are_the_sorted_visible_files_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["sim-2", "sim-10", "sim-1", ".hidden"] {
            std::fs::write(dir.path().join(name), "0123456789abcdef").unwrap();
        }
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        assert_eq!(
            identities_in(dir.path()).unwrap(),
            vec!["sim-1", "sim-10", "sim-2"]
        );
    }

    #[test]
    fn the_back_off_doubles_up_to_its_bound() {
        let p = HandshakePolicy::default();
        let pauses: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn a_given_key_is_not_printed() {
        let creds = Credentials {
            identity: "sim-1".into(),
            key: KeySource::Given("0123456789abcdef".into()),
        };
        assert!(!format!("{creds:?}").contains("0123"));
    }

    #[test]
    fn a_missing_key_fails_the_attempt_and_sets_the_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let mut secure = Secure::new(Dtls {
            credentials: in_dir(dir.path(), "sim-1"),
            policy: HandshakePolicy {
                attempts: 2,
                ..HandshakePolicy::default()
            },
        });
        let now = Instant::now();
        let first = secure.begin(now);
        assert!(
            matches!(
                &first,
                Handshake::Failed {
                    error: HandshakeError::NoKey { .. },
                    give_up: false
                }
            ),
            "{first:?}"
        );
        assert_eq!(secure.retry_at(), Some(now + Duration::from_secs(1)));
        assert!(matches!(
            secure.begin(now),
            Handshake::Failed { give_up: true, .. }
        ));
        // With the key in place the handshake starts: a ClientHello to send.
        std::fs::write(dir.path().join("sim-1"), "0123456789abcdef").unwrap();
        assert_eq!(secure.begin(now), Handshake::Pending);
        assert_eq!(secure.outgoing().len(), 1);
        assert!(secure.handshake_timer(now).is_some());
    }
}
