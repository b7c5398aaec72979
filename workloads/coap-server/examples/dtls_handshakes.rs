//! DTLS-PSK handshakes against a CoAP server, for the benchmarks (scripts/bench-dtls.sh): how
//! many full handshakes per second a server completes, and how much an established session
//! costs it. The same client measures coap-server and libcoap's `coap-server-openssl`.
//!
//!   rate:  dtls_handshakes rate --server ADDR --identity NAME --key KEY --seconds S --threads T
//!   hold:  dtls_handshakes hold --server ADDR --devices-file F --sessions N
//!
//! `rate` prints `handshakes=… failed=… seconds=… per_second=…`. `hold` establishes one session
//! per device of the file (as a fleet holds them), sends a CoAP ping over each (a device sends
//! right after its handshake, and the server frees the handshake's state at the first record
//! after it), prints `held=…`, and keeps them open until it is killed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use iot_testkit::dtls::DtlsClient;

const HANDSHAKE_WITHIN: Duration = Duration::from_secs(5);
/// An empty confirmable message (RFC 7252 §4.3): the server answers it with a reset.
const COAP_PING: [u8; 4] = [0x40, 0x00, 0x00, 0x01];

#[derive(Parser)]
#[command(about = "DTLS-PSK handshakes against a CoAP server, for scripts/bench-dtls.sh")]
struct Args {
    /// The server's DTLS address (host:port).
    #[arg(long, global = true, default_value = "127.0.0.1:5684")]
    server: SocketAddr,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Full handshakes, each from a new port, as fast as the threads go.
    Rate {
        #[arg(long)]
        identity: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// One session per device of a devices file (`NAME PLACE KEY`), held until killed.
    Hold {
        #[arg(long)]
        devices_file: String,
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Send nothing after the handshakes (the server then keeps each handshake's state).
        #[arg(long)]
        no_ping: bool,
    },
}

fn main() {
    let args = Args::parse();
    match args.mode {
        Mode::Rate {
            identity,
            key,
            seconds,
            threads,
        } => rate(
            args.server,
            &identity,
            key.as_bytes(),
            Duration::from_secs(seconds),
            threads,
        ),
        Mode::Hold {
            devices_file,
            sessions,
            no_ping,
        } => hold(args.server, &devices_file, sessions, !no_ping),
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

fn hold(server: SocketAddr, devices_file: &str, sessions: usize, ping: bool) {
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
            Ok(mut c) => {
                if ping {
                    c.send(&COAP_PING);
                }
                held.push(c);
            }
            Err(_) => failed += 1,
        }
    }
    println!("held={} failed={failed}", held.len());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
