//! DTLS-PSK handshakes against a CoAP server, for the benchmarks (scripts/bench-dtls.sh): how
//! many full handshakes per second a server completes, and how much an established session
//! costs it. The same client measures coap-server and libcoap's `coap-server-openssl`.
//!
//!   rate:  dtls_handshakes rate --server ADDR --identity NAME --key KEY --seconds S --threads T
//!   hold:  dtls_handshakes hold --server ADDR --devices-file F --sessions N
//!
//! `rate` prints `handshakes=… failed=… seconds=… per_second=…`. `hold` establishes one session
//! per device of the file (as a fleet holds them), prints `held=…`, and keeps them open until
//! it is killed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iot_testkit::dtls::DtlsClient;

const HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let number = |name: &str, default: u64| -> u64 {
        flag(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let server: SocketAddr = flag("--server")
        .expect("--server ADDR")
        .parse()
        .expect("--server is host:port");
    match args.first().map(String::as_str) {
        Some("rate") => {
            let identity = flag("--identity").expect("--identity NAME");
            let key = flag("--key").expect("--key KEY");
            rate(
                server,
                &identity,
                key.as_bytes(),
                Duration::from_secs(number("--seconds", 5)),
                number("--threads", 2) as usize,
            );
        }
        Some("hold") => {
            let file = flag("--devices-file").expect("--devices-file F");
            hold(server, &file, number("--sessions", 10_000) as usize);
        }
        _ => {
            eprintln!(
                "usage: dtls_handshakes rate|hold --server ADDR ... (see the source's header)"
            );
            std::process::exit(2);
        }
    }
}

fn rate(server: SocketAddr, identity: &str, key: &[u8], seconds: Duration, threads: usize) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            let (identity, key) = (identity.to_owned(), key.to_vec());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A new socket (a new port) each time: a full handshake with a cookie
                    // exchange, as a new device does.
                    match DtlsClient::connect(server, &identity, &key, HANDSHAKE_WITHIN) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(seconds);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "handshakes={n} failed={} seconds={secs:.2} per_second={:.0}",
        failed.load(Ordering::Relaxed),
        n as f64 / secs
    );
}

fn hold(server: SocketAddr, devices_file: &str, sessions: usize) {
    let text = std::fs::read_to_string(devices_file).expect("read the devices file");
    let devices: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3).then(|| (w[0].to_owned(), w[2].to_owned()))
        })
        .take(sessions)
        .collect();
    let mut held = Vec::with_capacity(devices.len());
    let mut failed = 0;
    for (name, key) in &devices {
        match DtlsClient::connect(server, name, key.as_bytes(), HANDSHAKE_WITHIN) {
            Ok(c) => held.push(c),
            Err(_) => failed += 1,
        }
    }
    println!("held={} failed={failed}", held.len());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
