//! The checks every request now meets at the edge, before routing or
//! authentication: the trusted-host check, CORS on the answer (and the
//! preflight answer), and the HTTP/1 framing watcher that reads every byte
//! of a plain connection.
//!
//! Run: `cargo bench -p portcullis-bench --bench edge -- --warm-up-time 1 --measurement-time 3`
//! (docs/benchmarks.md has the figures and what they mean).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::header::{
    ACCEPT, ACCEPT_ENCODING, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    CONTENT_LENGTH, CONTENT_TYPE, DATE, HOST, ORIGIN, USER_AGENT,
};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};
use portcullis_core::cors::{Cors, CorsConfig};
use portcullis_core::framing::H1Framer;
use portcullis_core::host::{HostError, TrustedHosts, request_host};
use std::hint::black_box;

/// The framer's head limit as the gateway sets it for the default
/// `server.max_header_bytes` (16 KiB, times four for hyper's buffer).
const MAX_HEAD: usize = 64 * 1024;

/// The allowed origin used below: the last of the three in the policy, so
/// the lookup compares against all of them.
const ALLOWED_ORIGIN: &str = "https://partner.example.org";

/// Stops the benchmark with a message when its set-up is not what it
/// claims to measure.
fn ensure(ok: bool, what: &str) {
    if !ok {
        eprintln!("benchmark set-up failed: {what}");
        std::process::exit(1);
    }
}

fn value(s: &str) -> HeaderValue {
    match HeaderValue::from_str(s) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("benchmark set-up failed: {s:?} is not a header value");
            std::process::exit(1);
        }
    }
}

/// Request headers as a client sends them, values copied in as hyper's
/// would be (not `from_static`), with the given `Host`.
fn request_headers(host: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HOST, value(host));
    h.insert(USER_AGENT, value("example-client/2.3.1 (linux; x86_64)"));
    h.insert(ACCEPT, value("application/json"));
    h.insert(ACCEPT_ENCODING, value("gzip, deflate, br"));
    h.insert(
        HeaderName::from_static("x-api-key"),
        value("pcs_live_4fQ9zK2mW7xR1tB8nV3cY6hL0pD5sJ"),
    );
    h
}

fn host(c: &mut Criterion) {
    let patterns = ["api.example.com".to_string(), "*.example.com".to_string()];
    let rules = match TrustedHosts::parse(&patterns) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("benchmark set-up failed: {e}");
            std::process::exit(1);
        }
    };
    let uri = Uri::from_static("/v1/orders/8412?include=items");
    let good = request_headers("api.example.com");
    let evil = request_headers("evil.com");
    ensure(
        request_host(&rules, Version::HTTP_11, &uri, &good)
            .is_ok_and(|h| h.name == "api.example.com" && h.port.is_none()),
        "Host: api.example.com is not allowed",
    );
    ensure(
        request_host(&rules, Version::HTTP_11, &uri, &evil) == Err(HostError::Untrusted),
        "Host: evil.com is not refused as untrusted",
    );

    let mut g = c.benchmark_group("host");
    g.bench_function("allowed", |b| {
        b.iter(|| request_host(&rules, Version::HTTP_11, black_box(&uri), black_box(&good)))
    });
    g.bench_function("refused", |b| {
        b.iter(|| request_host(&rules, Version::HTTP_11, black_box(&uri), black_box(&evil)))
    });
    g.finish();
}

/// A small upstream answer's headers, before CORS is applied.
fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("512"));
    h.insert(
        DATE,
        HeaderValue::from_static("Mon, 23 Nov 2026 10:00:00 GMT"),
    );
    h
}

fn cors(c: &mut Criterion) {
    let config = CorsConfig {
        allow_origins: vec![
            "https://app.example.com".into(),
            "https://admin.example.com".into(),
            ALLOWED_ORIGIN.into(),
        ],
        allow_methods: ["GET", "POST", "PUT", "DELETE"].map(String::from).to_vec(),
        allow_headers: ["Authorization", "X-API-Key", "X-Request-Id"]
            .map(String::from)
            .to_vec(),
        allow_credentials: true,
        ..CorsConfig::default()
    };
    let policy = match Cors::new(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("benchmark set-up failed: {e}");
            std::process::exit(1);
        }
    };
    let origin = value(ALLOWED_ORIGIN);

    let mut out = response_headers();
    policy.apply_origin(Some(&origin), &mut out);
    ensure(
        out.get("access-control-allow-origin") == Some(&origin)
            && out.contains_key("access-control-allow-credentials")
            && out.get("vary").is_some_and(|v| v == "Origin"),
        "the allowed origin does not get its CORS headers",
    );
    let mut out = response_headers();
    policy.apply_origin(None, &mut out);
    ensure(
        !out.contains_key("access-control-allow-origin"),
        "a request without Origin gets Access-Control-Allow-Origin",
    );

    let mut preflight = request_headers("api.example.com");
    preflight.insert(ORIGIN, origin.clone());
    preflight.insert(ACCESS_CONTROL_REQUEST_METHOD, value("POST"));
    preflight.insert(
        ACCESS_CONTROL_REQUEST_HEADERS,
        value("content-type,x-api-key"),
    );
    let mut out = HeaderMap::new();
    ensure(
        policy.preflight(&preflight, &mut out).is_ok()
            && out.get("access-control-allow-origin") == Some(&origin),
        "the preflight is not allowed",
    );

    let mut g = c.benchmark_group("cors");
    g.bench_function("apply_allowed", |b| {
        b.iter_batched(
            response_headers,
            |mut out| {
                policy.apply_origin(black_box(Some(&origin)), &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("apply_no_origin", |b| {
        b.iter_batched(
            response_headers,
            |mut out| {
                policy.apply_origin(black_box(None), &mut out);
                out
            },
            BatchSize::SmallInput,
        )
    });
    // The gateway answers a preflight into a new, empty map; so does this.
    g.bench_function("preflight_allowed", |b| {
        b.iter_batched(
            HeaderMap::new,
            |mut out| {
                let r = policy.preflight(black_box(&preflight), &mut out);
                (r, out)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// A 400-byte GET head as an API client sends it, padded to size with the
/// request id.
fn get_head() -> Vec<u8> {
    let mut head = b"GET /v1/orders/8412?include=items HTTP/1.1\r\n\
        Host: api.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: application/json\r\n\
        Accept-Language: en-GB,en;q=0.5\r\n\
        Accept-Encoding: gzip, deflate, br\r\n\
        X-API-Key: pcs_live_4fQ9zK2mW7xR1tB8nV3cY6hL0pD5sJ\r\n\
        Connection: keep-alive\r\n\
        X-Request-Id: "
        .to_vec();
    let pad = 400usize.saturating_sub(head.len() + 4);
    head.extend((0..pad).map(|i| b"0123456789abcdef"[i % 16]));
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// POSTs with 1 KiB bodies, back to back: as many whole requests as fit
/// in 64 KiB.
fn post_stream() -> (Vec<u8>, usize) {
    let head = b"POST /v1/events HTTP/1.1\r\n\
        Host: api.example.com\r\n\
        User-Agent: example-client/2.3.1 (linux; x86_64)\r\n\
        Content-Type: application/json\r\n\
        X-API-Key: pcs_live_4fQ9zK2mW7xR1tB8nV3cY6hL0pD5sJ\r\n\
        Content-Length: 1024\r\n\r\n";
    let mut body = br#"{"events":[{"kind":"click","at":1795428000}"#.to_vec();
    body.resize(1023, b' ');
    body.push(b'}');
    let one = head.len() + body.len();
    let n = 64 * 1024 / one;
    let mut stream = Vec::with_capacity(n * one);
    for _ in 0..n {
        stream.extend_from_slice(head);
        stream.extend_from_slice(&body);
    }
    (stream, n)
}

fn framing(c: &mut Criterion) {
    let head = get_head();
    ensure(head.len() == 400, "the GET head is not 400 bytes");
    let (stream, requests) = post_stream();
    eprintln!(
        "framing/pipelined_post_64k: {requests} requests, {} bytes",
        stream.len()
    );
    for input in [&head, &stream] {
        let mut f = H1Framer::new(MAX_HEAD);
        for _ in 0..3 {
            ensure(
                f.feed(input).is_none() && f.following(),
                "the framer does not follow the stream to its end",
            );
        }
    }

    let mut g = c.benchmark_group("framing");
    // One framer for the whole run: a keep-alive connection carrying one
    // head after another, each arriving in one read.
    let mut f = H1Framer::new(MAX_HEAD);
    g.bench_function("get_head_400b", |b| b.iter(|| f.feed(black_box(&head))));
    ensure(f.following(), "the framer stopped following the GET heads");

    let mut f = H1Framer::new(MAX_HEAD);
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("pipelined_post_64k", |b| {
        b.iter(|| f.feed(black_box(&stream)))
    });
    ensure(f.following(), "the framer stopped following the POSTs");
    g.finish();
}

criterion_group!(edge, host, cors, framing);
criterion_main!(edge);
