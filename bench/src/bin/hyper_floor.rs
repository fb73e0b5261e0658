//! The floor: a reverse proxy that is hyper and nothing else (no checks,
//! no log), in the runtime shape issue 23 asks of the gateway: one
//! current-thread tokio runtime per thread, each with its own
//! `SO_REUSEPORT` listener and its own HTTP/1 connections to the upstream.
//! bench/side-by-side runs it beside the gateway, so every run shows what
//! the gateway's own layers cost on top of hyper.
//!
//! Usage: `hyper_floor --listen IP:PORT --upstream IP:PORT [--threads N]`
//! (threads default to the number of cores). Prints `listening on
//! IP:PORT` once every loop is bound.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;
type Reply = Response<Either<Incoming, Empty<Bytes>>>;

/// An idle upstream connection of this thread, or a new one. Connections
/// still reading a response are skipped, closed ones dropped.
async fn checkout(pool: &Pool, upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    {
        let mut p = pool.borrow_mut();
        p.retain(|s| !s.is_closed());
        if let Some(i) = p.iter().position(|s| s.is_ready()) {
            return Some(p.swap_remove(i));
        }
    }
    let tcp = tokio::net::TcpStream::connect(upstream).await.ok()?;
    tcp.set_nodelay(true).ok()?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::task::spawn_local(conn);
    Some(send)
}

async fn proxy(
    req: Request<Incoming>,
    pool: Pool,
    upstream: SocketAddr,
) -> Result<Reply, hyper::Error> {
    let bad_gateway = || {
        let mut r = Response::new(Either::Right(Empty::new()));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    };
    let Some(mut send) = checkout(&pool, upstream).await else {
        return Ok(bad_gateway());
    };
    let res = send.send_request(req).await;
    // Back in the pool at once: it is ready again when the body is read.
    pool.borrow_mut().push(send);
    Ok(match res {
        Ok(r) => r.map(Either::Left),
        Err(_) => bad_gateway(),
    })
}

async fn serve(listener: tokio::net::TcpListener, upstream: SocketAddr) {
    let pool: Pool = Rc::new(RefCell::new(Vec::new()));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let pool = pool.clone();
        tokio::task::spawn_local(async move {
            let svc = hyper::service::service_fn(move |req| proxy(req, pool.clone(), upstream));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let (mut listen, mut upstream, mut threads) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--listen" => listen = v.parse::<SocketAddr>().ok(),
            "--upstream" => upstream = v.parse::<SocketAddr>().ok(),
            "--threads" => threads = v.parse::<usize>().ok().filter(|n| *n > 0),
            _ => listen = None,
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        eprintln!("usage: hyper_floor --listen IP:PORT --upstream IP:PORT [--threads N]");
        return std::process::ExitCode::from(2);
    };
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    for _ in 0..threads {
        let ready = ready_tx.clone();
        handles.push(std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(e.to_string()))),
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let bound = (|| {
                    let s = tokio::net::TcpSocket::new_v4()?;
                    s.set_reuseport(true)?;
                    s.set_reuseaddr(true)?;
                    s.bind(listen)?;
                    s.listen(1024)
                })();
                match bound {
                    Ok(l) => {
                        let _ = ready.send(Ok(()));
                        serve(l, upstream).await;
                    }
                    Err(e) => drop(ready.send(Err(format!("cannot listen on {listen}: {e}")))),
                }
            });
        }));
    }
    for _ in 0..threads {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("hyper_floor: {e}");
                return std::process::ExitCode::from(1);
            }
            Err(_) => return std::process::ExitCode::from(1),
        }
    }
    println!("listening on {listen}");
    for h in handles {
        let _ = h.join();
    }
    std::process::ExitCode::SUCCESS
}
