//! The fixed upstream of the side-by-side benchmark: every contender
//! proxies to this, so it must cost the same for all of them and as little
//! as possible. Every request, any method and path, gets `200` with the
//! same small JSON body.
//!
//! Usage: `bench-upstream [--listen ADDR] [--threads N]`
//! (defaults `127.0.0.1:9000`, 1 worker thread).
//!
//! Once bound it prints exactly one line, `listening on IP:PORT`, so a
//! harness that asked for port 0 learns the real one. It exits 0 on
//! SIGTERM or SIGINT; bad arguments print one line on stderr and exit 2.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;

const BODY: &[u8] = br#"{"data":"hello from the upstream"}"#;

const USAGE: &str = "usage: bench-upstream [--listen ADDR] [--threads N]";

struct Args {
    listen: SocketAddr,
    threads: usize,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9000));
    let mut threads = 1usize;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = v
                    .parse()
                    .map_err(|_| format!("--listen: not an IP:PORT address: {v:?}"))?;
            }
            "--threads" => {
                let v = value()?;
                threads = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("--threads: not a positive integer: {v:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(Some(Args { listen, threads }))
}

/// Reads and drops the request body, then answers the fixed response.
/// Draining first keeps the connection reusable and makes a request with a
/// body cost the upstream what it would cost a real one.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

async fn accept_loop(listener: TcpListener) {
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Usually out of file descriptors under a heavy run: back
                // off briefly instead of spinning, and keep serving.
                eprintln!("bench-upstream: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small responses must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), service_fn(handle));
        tokio::spawn(async move {
            // A client going away mid-request is normal during a benchmark
            // (the load generator stops); nothing to report.
            let _ = conn.await;
        });
    }
}

async fn run(listen: SocketAddr) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    // Install the handlers before announcing the port: a harness may
    // signal as soon as it has read the line.
    let signal_err = |e: std::io::Error| format!("cannot install signal handlers: {e}");
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(signal_err)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    // The accept loop runs on a worker, not on the thread blocked in
    // `block_on`, so `--threads N` really is the number of threads serving.
    let server = tokio::spawn(accept_loop(listener));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    server.abort();
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench-upstream: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-upstream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args.listen));
    // Open connections are dropped rather than drained: the harness only
    // stops the upstream after the load generator has finished.
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}
