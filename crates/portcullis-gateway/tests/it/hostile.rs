//! Hostile HTTP over raw sockets: every request-smuggling form refused
//! with 400 and a closed connection (and never forwarded), heads over the
//! limit, bodies over the route's limit (declared and streamed), slow
//! heads and bodies, the per-address connection cap, and the trusted-host
//! rules.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Sends `bytes` on a fresh connection and reads until the server closes
/// it (or `wait` passes): (everything read, whether it closed).
fn exchange(port: u16, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
        }
        if Instant::now() > deadline {
            return (String::from_utf8_lossy(&out).into_owned(), false);
        }
    }
}

/// How long a connection that must be closed gets to be closed: a hang
/// detector, not a speed requirement (such calls return at the close).
const CLOSE_WAIT: Duration = Duration::from_secs(30);

fn responses(out: &str) -> usize {
    out.matches("HTTP/1.1 ").count()
}

#[test]
fn smuggling_forms_are_refused_and_the_connection_closed() {
    let up = upstream();
    let env = Env::new(&format!(
        "[[routes]]\npath = \"/**\"\nupstream = \"http://{}\"\nauth = []\n",
        up.addr
    ));
    env.init();
    let _srv = env.serve();
    // Each form carries a second, smuggled request in the same bytes; it
    // must never reach the upstream.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: &[(&str, String)] = &[
        (
            "CL.TE",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE.CL",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE.TE repeated",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE list",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE xchunked",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "CL twice, different",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd{smuggled}"
            ),
        ),
        (
            "CL twice, equal",
            format!(
                "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd{smuggled}"
            ),
        ),
        (
            "CL with a sign",
            format!("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd{smuggled}"),
        ),
        (
            "obs-fold",
            format!("GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n{smuggled}"),
        ),
        (
            "bare CR",
            format!("GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n{smuggled}"),
        ),
        (
            "TE on HTTP/1.0",
            format!(
                "POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "h2c upgrade",
            format!(
                "GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n{smuggled}"
            ),
        ),
    ];
    for (name, bytes) in cases {
        let (out, closed) = exchange(env.port, bytes.as_bytes(), CLOSE_WAIT);
        assert!(out.starts_with("HTTP/1.1 400"), "{name}: {out}");
        assert_eq!(
            responses(&out),
            1,
            "{name}: the smuggled request was answered: {out}"
        );
        assert!(closed, "{name}: the connection stayed open: {out}");
    }
    // The ones hyper lets through to us get a problem+json that says why.
    let (out, _) = exchange(env.port, cases[0].1.as_bytes(), Duration::from_secs(5));
    assert!(out.contains("\"code\":\"ambiguous_framing\""), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "a hostile request reached the upstream"
    );

    // A good keep-alive stream whose bodies look like smuggling is fine,
    // pipelined.
    let body = "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
    let good = format!(
        "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        body.len(),
        body.len()
    );
    let (out, _) = exchange(env.port, good.as_bytes(), Duration::from_secs(5));
    assert_eq!(out.matches("HTTP/1.1 200").count(), 3, "{out}");
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

#[test]
fn size_limits_slow_clients_and_the_connection_cap() {
    let env = Env::with_server(
        "trusted_proxies = []\nmax_connections_per_ip = 4\nbody_read_timeout = \"2s\"",
        "[[routes]]\npath = \"/**\"\nupstream = \"demo\"\nauth = []\nmax_body_bytes = 1000\n",
    );
    env.init();
    let srv = env.serve();
    let port = env.port;

    // A head over server.max_header_bytes (16 KiB): 431 problem+json.
    let big = "a".repeat(20 * 1024);
    let (out, closed) = exchange(
        port,
        format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        CLOSE_WAIT,
    );
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(out.contains("\"code\":\"headers_too_large\""), "{out}");
    assert!(closed);
    // Far over it, hyper answers before we see it: still 431.
    let huge = "a".repeat(100 * 1024);
    let (out, _) = exchange(
        port,
        format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    );
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(200)]
    );

    // A declared body over the route's 1000 bytes: 413 before it is read
    // (no 100 Continue).
    let (out, _) = exchange(
        port,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(!out.contains("100 Continue"), "{out}");
    assert!(out.contains("\"code\":\"payload_too_large\""), "{out}");
    // A chunked body that grows past it: 413 as it streams.
    let chunk = format!("{:x}\r\n{}\r\n", 600, "b".repeat(600));
    let (out, _) = exchange(
        port,
        format!("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    // Within the limit: the demo read all of it.
    let (out, _) = exchange(
        port,
        format!("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}0\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"body_bytes\":600"), "{out}");

    // A body that stops arriving: 408 after body_read_timeout.
    let (out, _) = exchange(
        port,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b",
        CLOSE_WAIT,
    );
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("\"code\":\"request_timeout\""), "{out}");

    // A head that never ends: cut off by header_read_timeout (2 s here).
    let (_, closed) = exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\n", CLOSE_WAIT);
    assert!(closed, "a slow head kept its connection");

    // At most 4 connections from one address; the fifth is closed at once.
    // The four are accepted (and counted) before the fifth, in order; a
    // request on each proves the server holds them open.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for (i, c) in idle.iter_mut().enumerate() {
        c.set_read_timeout(Some(CLOSE_WAIT)).unwrap();
        c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200", "kept connection {i}");
    }
    let (out, closed) = exchange(
        port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        CLOSE_WAIT,
    );
    assert!(closed && out.is_empty(), "fifth connection served: {out}");
    drop(idle);
    // The server sees the four closes in its own time: ask until a new
    // connection is served (a refused one is closed unanswered).
    let deadline = Instant::now() + CLOSE_WAIT;
    let out = loop {
        let (out, _) = exchange(
            port,
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            CLOSE_WAIT,
        );
        if !out.is_empty() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "after the cap freed up: {out}"
    );
    drop(srv);
}

#[test]
fn trusted_hosts_are_checked_before_routing() {
    let up = upstream();
    let env = Env::with_server(
        "trusted_hosts = [\"api.example.com\", \"*.example.com\"]\ntrusted_proxies = []",
        &format!(
            "[[routes]]\npath = \"/**\"\nupstream = \"http://{}\"\nauth = []\n",
            up.addr
        ),
    );
    env.init();
    let _srv = env.serve();
    let get = |head: &str| {
        exchange(
            env.port,
            format!("{head}Connection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(5),
        )
        .0
    };
    for (what, head) in [
        ("exact", "GET /x HTTP/1.1\r\nHost: api.example.com\r\n"),
        (
            "with a port",
            "GET /x HTTP/1.1\r\nHost: api.example.com:8443\r\n",
        ),
        ("subdomain", "GET /x HTTP/1.1\r\nHost: a.b.example.com\r\n"),
        ("upper case", "GET /x HTTP/1.1\r\nHost: API.Example.COM\r\n"),
        (
            "absolute-form, same host",
            "GET http://api.example.com/x HTTP/1.1\r\nHost: api.example.com\r\n",
        ),
        (
            "X-Forwarded-Host from an untrusted peer is ignored",
            "GET /x HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-Host: evil.com\r\n",
        ),
    ] {
        let out = get(head);
        assert!(out.starts_with("HTTP/1.1 200"), "{what}: {out}");
    }
    let hits = up.hits.load(Ordering::SeqCst);
    for (what, head) in [
        ("untrusted", "GET /x HTTP/1.1\r\nHost: evil.com\r\n"),
        ("bare parent", "GET /x HTTP/1.1\r\nHost: example.com\r\n"),
        ("look-alike", "GET /x HTTP/1.1\r\nHost: evilexample.com\r\n"),
        (
            "userinfo",
            "GET /x HTTP/1.1\r\nHost: api.example.com:1@evil.com\r\n",
        ),
        (
            "two Host lines",
            "GET /x HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.com\r\n",
        ),
        ("no Host", "GET /x HTTP/1.1\r\n"),
        (
            "trailing dot",
            "GET /x HTTP/1.1\r\nHost: api.example.com.\r\n",
        ),
        (
            "absolute-form, other host",
            "GET http://evil.com/x HTTP/1.1\r\nHost: api.example.com\r\n",
        ),
    ] {
        let out = get(head);
        assert!(out.starts_with("HTTP/1.1 400"), "{what}: {out}");
        if !out.contains("content-length: 0") {
            assert!(
                out.contains("\"detail\":\"Invalid host header\""),
                "{what}: {out}"
            );
        }
    }
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        hits,
        "a bad host reached the upstream"
    );
}

#[test]
fn forwarded_host_is_checked_from_trusted_proxies() {
    let env = Env::with_server(
        "trusted_hosts = [\"api.example.com\"]",
        "[[routes]]\npath = \"/**\"\nupstream = \"demo\"\nauth = []\n",
    );
    env.init();
    let _srv = env.serve();
    // Loopback is a trusted proxy by default: its X-Forwarded-Host counts.
    let (out, _) = exchange(
        env.port,
        b"GET /x HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-Host: evil.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let (out, _) = exchange(
        env.port,
        b"GET /x HTTP/1.1\r\nHost: internal:8080\r\nX-Forwarded-Host: api.example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    // The proxy may point Host at us: the forwarded host is the one
    // checked.
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let (out, _) = exchange(
        env.port,
        b"GET /x HTTP/1.1\r\nHost: api.example.com\r\nX-Forwarded-Host: api.example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
