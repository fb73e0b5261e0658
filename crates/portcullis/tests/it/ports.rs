//! Free loopback ports for the servers a test starts (the gateway, Redis,
//! Postgres, nginx, Caddy…). The gateway's tests use this file too
//! (`#[path]` in their main.rs).
//!
//! Why not "bind port 0, read it, release it": that port comes from the
//! kernel's ephemeral range, which every outgoing connection draws from too,
//! so between the release and the server's own bind another test's client
//! can take it, and the server fails with "Address already in use" (seen in
//! CI). Ports here come from below the ephemeral range, which no outgoing
//! connection is given; each is handed out once per process, starting at a
//! place derived from the process id so two test processes rarely meet, and
//! checked free by binding it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the registered services most
/// machines run.
const LOW: u32 = 10_000;

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port that was free a moment ago and that no outgoing
/// connection will be given.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_low().min(65_536);
    if high <= LOW + 1_000 {
        // An unusual range leaves no room below it: fall back to the kernel.
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let span = high - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (start + n) % span;
        let port = u16::try_from(port).expect("below 65536 by construction");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {high}");
}
