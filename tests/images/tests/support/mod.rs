//! Small servers and helpers for the run tests.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iot_images::oci::Bundle;

/// The UID runc will run the bundle's process as (umoci derived it from the image's User).
pub fn uid_of(bundle: &Bundle) -> u64 {
    let text = std::fs::read_to_string(bundle.path.join("config.json")).unwrap();
    let spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec["process"]["user"]["uid"].as_u64().unwrap()
}

pub fn wait_for(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free TCP port on 127.0.0.1 (the listener is closed again: a race is possible but rare).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP/1.0 GET to 127.0.0.1:port; the whole response.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A DNS server for one name: A 127.0.0.1 for `name`, an empty answer for its other types, and
/// NXDOMAIN for every other name. It listens on port 53 (resolv.conf has no port) of a loopback
/// address of its own, 127.53.x.y, so that parallel runs do not meet; nothing leaves the machine.
pub struct DnsStub {
    ip: Ipv4Addr,
    answered: Arc<Mutex<Vec<String>>>,
}

impl DnsStub {
    pub fn start(name: &str) -> Self {
        let pid = std::process::id();
        let socket = (1..=250u8)
            .find_map(|n| {
                let ip = Ipv4Addr::new(127, 53, (pid % 250) as u8 + 1, n);
                UdpSocket::bind((ip, 53)).ok()
            })
            .expect("a free 127.53.x.y:53");
        let ip = match socket.local_addr().unwrap().ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("{other}"),
        };
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let (log, name) = (answered.clone(), name.to_ascii_lowercase());
        // Lives as long as the test process; bounded by its read timeout loop and 10 minutes.
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(600);
            let mut buf = [0u8; 512];
            while Instant::now() < until {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((reply, qname, is_a)) = answer(&buf[..n], &name) {
                    if qname == name && is_a {
                        log.lock().unwrap().push(qname);
                    }
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        DnsStub { ip, answered }
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The names answered with an address so far.
    pub fn answered(&self) -> Vec<String> {
        self.answered.lock().unwrap().clone()
    }
}

/// The reply to one query (RFC 1035 §4.1): the header and question echoed, one A record when
/// the question is (name, A, IN). Also the question's name and whether it asked for A.
fn answer(query: &[u8], name: &str) -> Option<(Vec<u8>, String, bool)> {
    if query.len() < 12 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    let qname = labels.join(".");
    let known = qname == name;
    let is_a = qtype == 1;
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[0..2]); // ID
    let rcode = if known { 0 } else { 3 }; // NOERROR or NXDOMAIN
    reply.extend_from_slice(&[0x81, 0x80 | rcode]); // QR, RD, RA
    reply.extend_from_slice(&[0, 1, 0, u8::from(known && is_a), 0, 0, 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if known && is_a {
        // Name as a pointer to the question, A, IN, TTL 30, 4 bytes of address.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 127, 0, 0, 1]);
    }
    Some((reply, qname, is_a))
}
