//! Clients that try to take the service away from everyone else, each run
//! against a gateway with short deadlines: connections that say nothing
//! (bare TCP, TLS then silence, half a preface, HTTP/2 that only answers
//! PINGs) are closed; HTTP/2 control-frame floods get GOAWAY
//! `ENHANCE_YOUR_CALM`; a client that never reads its responses is held
//! to bounded memory and cut off; streams that never send their bodies
//! open no upstream connection; each upstream has a connection budget; a
//! full connection table gives idle connections up first; HTTP/2 is spoken
//! only where it was chosen. Valid requests from another address are
//! served throughout. The attacks are `tests/python/h2_attacks.py` (the
//! `h2` frame library) and `h2load` (Debian's nghttp2-client).

use crate::harness::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The deadlines every gateway here runs with.
const SHORT: &str = "trusted_proxies = []\nfirst_request_timeout = \"1s\"\nidle_timeout = \"2s\"\nsend_timeout = \"2s\"\nh2_control_frames_per_second = 100";

/// An upstream that answers every request with `len` bytes after `delay`,
/// counting the connections it accepted.
struct BigUpstream {
    port: u16,
    connections: Arc<AtomicUsize>,
}

fn big_upstream(len: usize, delay: Duration) -> BigUpstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut len_in = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some((n, v)) = h.split_once(':')
                            && n.eq_ignore_ascii_case("content-length")
                        {
                            len_in = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len_in];
                    if std::io::Read::read_exact(&mut r, &mut body).is_err() {
                        return;
                    }
                    std::thread::sleep(delay);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\n\r\n"
                    );
                    if s.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if s.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        left -= n;
                    }
                }
            });
        }
    });
    BigUpstream { port, connections }
}

fn routes(up: u16) -> String {
    format!("[[routes]]\npath = \"/**\"\nupstream = \"http://127.0.0.1:{up}\"\nauth = []\n")
}

/// Runs one attack; its JSON line.
fn attack(name: &str, port: u16, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(venv_python())
        .arg(repo_root().join("tests/python/h2_attacks.py"))
        .arg(name)
        .arg(port.to_string())
        .args(["--source", "127.0.0.2"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The answer to an HTTP/2 preface was not HTTP/2: nothing (hyper's
/// HTTP/1 parser closes on it) or an HTTP/1.1 error, and the connection
/// closed.
fn assert_not_h2(v: &serde_json::Value) {
    let a = v["answer"].as_str().unwrap_or("");
    assert!(a.is_empty() || a.starts_with("HTTP/1.1 4"), "{v}");
    assert!(closed(v), "{v}");
}

fn closed(v: &serde_json::Value) -> bool {
    v["closed_after"].is_number()
}

/// A valid request from 127.0.0.1 (the attacks come from 127.0.0.2).
fn served(port: u16) -> bool {
    let (status, _) = crate::boundary::raw_get(port, "/ok", &[]);
    status == 200
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn connections_that_say_nothing_are_closed() {
    let up = big_upstream(10, Duration::ZERO);
    let env = Env::with_server(&format!("{SHORT}\nh2c = true"), &routes(up.port));
    env.init();
    let srv = env.serve();
    // Each attack runs for up to 10 s; the deadlines are 1-2 s.
    for (name, args) in [
        ("silent-tcp", vec![]),
        ("partial-preface", vec![]),
        ("idle-pings", vec![]),
    ] {
        let v = attack(name, env.port, &args);
        eprintln!("{v}");
        assert!(closed(&v), "{name} was never closed: {v}\n{}", srv.log());
    }
    assert!(served(env.port));

    // The same over TLS: silence after the handshake, and an HTTP/2
    // client that answers PINGs and asks nothing.
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "hc", &["localhost"]);
    let tls = Env::with_server(
        SHORT,
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{}",
            path_str(&certs.cert),
            path_str(&certs.key),
            routes(up.port)
        ),
    );
    tls.init();
    let tsrv = tls.serve();
    let ca = path_str(&certs.ca_file);
    for name in ["silent-tcp", "silent-tls", "partial-preface", "idle-pings"] {
        let v = attack(name, tls.port, &["--tls", &ca]);
        eprintln!("TLS {v}");
        assert!(
            closed(&v),
            "TLS {name} was never closed: {v}\n{}",
            tsrv.log()
        );
    }
    // HTTP/2 only where ALPN chose it: the preface after ALPN http/1.1 is
    // an HTTP/1.1 request, and a bad one.
    let v = attack("h2-without-alpn", tls.port, &["--tls", &ca]);
    assert_not_h2(&v);
}

#[test]
fn plain_listeners_speak_http2_only_when_told() {
    let up = big_upstream(10, Duration::ZERO);
    let env = Env::with_server(SHORT, &routes(up.port));
    env.init();
    let _s = env.serve();
    let v = attack("h2-without-alpn", env.port, &[]);
    assert_not_h2(&v);
}

#[test]
fn control_frame_floods_get_goaway_enhance_your_calm() {
    let up = big_upstream(10, Duration::ZERO);
    let env = Env::with_server(&format!("{SHORT}\nh2c = true"), &routes(up.port));
    env.init();
    let srv = env.serve();
    for name in ["ping-flood", "settings-flood", "empty-data-flood"] {
        // Valid HTTP/2 traffic from another address meanwhile.
        let load = std::thread::spawn({
            let port = env.port;
            move || {
                Command::new("h2load")
                    .args(["-n", "300", "-c", "2", "-m", "4"])
                    .arg(format!("http://127.0.0.1:{port}/ok"))
                    .output()
                    .expect("h2load (Debian's nghttp2-client) is not installed: run scripts/install-test-deps.sh")
            }
        });
        let v = attack(name, env.port, &["--seconds", "8"]);
        eprintln!("{v}");
        assert!(closed(&v), "{name}: never closed: {v}\n{}", srv.log());
        assert_eq!(v["goaway"], 11, "{name}: no GOAWAY ENHANCE_YOUR_CALM: {v}");
        let out = load.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("300 succeeded") && text.contains("300 2xx"),
            "{name}: valid traffic suffered: {text}"
        );
    }
    // The log is written in batches by its own thread: wait for the line.
    within(Duration::from_secs(10), || {
        srv.log().contains("h2_ping_flood")
    })
    .unwrap_or_else(|| panic!("{}", srv.log()));
}

#[test]
fn a_client_that_never_reads_is_bounded_and_cut_off() {
    // 4 MiB answers; 50 streams; windows opened wide; nothing read.
    let up = big_upstream(4 << 20, Duration::ZERO);
    let env = Env::with_server(&format!("{SHORT}\nh2c = true"), &routes(up.port));
    env.init();
    let srv = env.serve();
    assert!(served(env.port));
    let pid = srv.child.id();
    let before = rss_kib(pid);
    let peak = Arc::new(AtomicUsize::new(0));
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let (peak, watching) = (peak.clone(), watching.clone());
        move || {
            while watching.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid) as usize, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let v = attack(
        "slow-reader",
        env.port,
        &["--seconds", "6", "--streams", "50", "--path", "/big"],
    );
    watching.store(false, Ordering::SeqCst);
    sampler.join().unwrap();
    let grown = (peak.load(Ordering::SeqCst) as u64).saturating_sub(before);
    eprintln!("slow reader, 50 streams x 4 MiB: RSS {before} KiB, peak +{grown} KiB");
    // The documented bound per connection: streams x (send buffer +
    // receive window) plus the connection window, ~7.4 MiB here; the
    // unbounded server held ~200 MiB for this attack.
    assert!(
        grown < 32 * 1024,
        "RSS grew by {grown} KiB for one connection that does not read: {v}"
    );
    let log = srv.log();
    assert!(log.contains("send_timeout"), "never cut off: {v}\n{log}");
    assert!(served(env.port));
}

#[test]
fn a_stalled_stream_is_cut_off_whatever_its_neighbours_do() {
    let up = big_upstream(1 << 20, Duration::ZERO);
    let env = Env::with_server(&format!("{SHORT}\nh2c = true"), &routes(up.port));
    env.init();
    let srv = env.serve();
    let v = attack(
        "stalled-with-traffic",
        env.port,
        &["--seconds", "10", "--path", "/big"],
    );
    eprintln!("{v}");
    assert!(
        closed(&v),
        "a stalled stream lived on beside traffic: {v}\n{}",
        srv.log()
    );
    // The "connection closed" line is written by the log thread's next
    // batch (every 10 ms), maybe after the client saw the close.
    let logged = within(Duration::from_secs(10), || {
        srv.log().contains("send_timeout")
    });
    assert!(logged.is_some(), "{}", srv.log());
}

#[test]
fn bodies_that_trickle_take_no_upstream_budget() {
    // A budget of 2; three clients each send one byte of a 1000-byte body
    // and hold it. A fourth request must still be served.
    let up = big_upstream(10, Duration::ZERO);
    let env = Env::with_server(
        "trusted_proxies = []\nbody_read_timeout = \"20s\"",
        &format!(
            "[upstream]\nmax_connections = 2\nqueue_timeout = \"1s\"\n\n{}",
            routes(up.port)
        ),
    );
    env.init();
    let _srv = env.serve();
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
            write!(
                s,
                "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nx"
            )
            .unwrap();
            s
        })
        .collect();
    // Each valid request is served while the trickles are held: they
    // hold no place in the budget of 2 (else these would wait 1 s and
    // get 503 upstream_busy).
    for _ in 0..3 {
        let (status, body) = crate::boundary::raw_get(env.port, "/ok", &[]);
        assert_eq!(status, 200, "{body}");
    }
    drop(held);
}

#[test]
fn streams_that_never_send_their_bodies_open_no_upstream_connection() {
    let up = big_upstream(10, Duration::ZERO);
    let env = Env::with_server(
        &format!("{SHORT}\nh2c = true\nbody_read_timeout = \"2s\""),
        &routes(up.port),
    );
    env.init();
    let _srv = env.serve();
    let v = attack(
        "unsent-bodies",
        env.port,
        &["--seconds", "3", "--streams", "60", "--path", "/upload"],
    );
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "bodies that never came opened upstream connections: {v}"
    );
    assert!(served(env.port));
}

#[test]
fn each_upstream_has_a_connection_budget() {
    let up = big_upstream(10, Duration::from_secs(3));
    let env = Env::new(&format!(
        "[upstream]\nmax_connections = 2\nqueue_timeout = \"1s\"\n\n{}",
        routes(up.port)
    ));
    env.init();
    let _srv = env.serve();
    let port = env.port;
    let first: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || crate::boundary::raw_get(port, "/slow", &[])))
        .collect();
    // The first two hold the budget once the upstream has both.
    within(Duration::from_secs(30), || {
        up.connections.load(Ordering::SeqCst) >= 2
    })
    .expect("the first two requests never reached the upstream");
    let third = crate::boundary::raw_get(port, "/slow", &[]);
    let mut answers: Vec<(u16, String)> = first.into_iter().map(|h| h.join().unwrap()).collect();
    answers.push(third);
    assert_eq!(answers[0].0, 200, "{:?}", answers[0]);
    assert_eq!(answers[1].0, 200, "{:?}", answers[1]);
    assert_eq!(answers[2].0, 503, "{:?}", answers[2]);
    assert!(answers[2].1.contains("upstream_busy"), "{:?}", answers[2]);
    assert!(up.connections.load(Ordering::SeqCst) <= 2);
    // Freed again once the answers are done.
    let (status, _) = crate::boundary::raw_get(port, "/slow", &[]);
    assert_eq!(status, 200);
}

#[test]
fn a_full_table_gives_idle_connections_up_first() {
    let up = big_upstream(10, Duration::ZERO);
    // Deadlines long enough that only the table's pressure closes them.
    let env = Env::with_server(
        "trusted_proxies = []\nmax_connections = 20\nfirst_request_timeout = \"60s\"",
        &routes(up.port),
    );
    env.init();
    let _srv = env.serve();
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", env.port)).unwrap())
        .collect();
    // The 21st connection waits in the backlog until the full table
    // closes an idle one for it.
    assert!(
        served(env.port),
        "a full table of silent connections locked a client out"
    );
    drop(idle);
}
