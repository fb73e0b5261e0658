//! The public listener's shape: one single-threaded event loop per core,
//! each with its own `SO_REUSEPORT` socket on the same address, so the
//! kernel spreads connections across loops and a connection's requests,
//! its upstream connections and its timers stay on one thread — no
//! work-stealing handoffs, no cross-thread wakeups, no contended pool
//! lock (docs/benchmarks.md, "The engine").
//!
//! What the loops share is read-mostly (the config, routes, verifier
//! cache, rate-limit counters) or touched once per connection (the
//! connection table, [`crate::serve::Gate`]). Background work — store
//! polling, log writing, analytics flushes, metrics upkeep, the admin
//! listener — stays on the main runtime.

use crate::config::Config;
use crate::serve::{Conn, Gate, Transport};
use anyhow::{Context as _, Result};
use axum::body::Body;
use http::{Request, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

/// Pending connections the kernel queues per socket.
const BACKLOG: u32 = 1024;

/// Binds `n` sockets to `addr`, all with `SO_REUSEPORT`. The first is
/// bound to `addr` as written; the others to the address it got, so a
/// port of 0 means one port for every loop.
///
/// Only sockets of the same user can join a `SO_REUSEPORT` group on
/// Linux; a second Portcullis under that user on the same address would
/// share its connections, as a second nginx with `reuseport` would.
pub fn bind(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n.max(1) {
        out.push(bind_one(bound).with_context(|| format!("cannot listen on {bound}"))?);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    // Registered with the runtime that serves it, not this one.
    socket.listen(BACKLOG)?.into_std()
}

/// Serves each of `sockets` on its own thread with its own
/// single-threaded runtime until `shutdown` flips and open requests end.
/// The returned receiver completes when every loop has stopped.
pub fn spawn<F, Fut>(
    sockets: Vec<std::net::TcpListener>,
    cfg: Arc<Config>,
    transport: Transport,
    handler: F,
    shutdown: watch::Receiver<bool>,
) -> Result<Loops>
where
    F: Fn(Conn, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let gate = Gate::new(&cfg);
    let mut done = Vec::with_capacity(sockets.len());
    for (i, socket) in sockets.into_iter().enumerate() {
        let (tx, rx) = oneshot::channel::<()>();
        let (gate, cfg, transport, handler, shutdown) = (
            gate.clone(),
            cfg.clone(),
            transport.clone(),
            handler.clone(),
            shutdown.clone(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start an event loop")?;
        std::thread::Builder::new()
            .name(format!("portcullis-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(l) => {
                            crate::serve::run_gated(l, gate, cfg, transport, handler, shutdown)
                                .await
                        }
                        Err(e) => tracing::error!(error = %e, "event loop cannot take its socket"),
                    }
                });
                // Dropping the runtime here ends what is left of its
                // connections (the grace period is over).
                drop(rt);
                let _ = tx.send(());
            })
            .context("cannot start an event loop thread")?;
        done.push(rx);
    }
    Ok(Loops { done })
}

/// The running loops.
pub struct Loops {
    done: Vec<oneshot::Receiver<()>>,
}

impl Loops {
    /// Waits for every loop to stop (after shutdown and its grace).
    pub async fn join(self) {
        for d in self.done {
            // An error means the thread ended without saying so (a
            // panic): it has stopped either way.
            let _ = d.await;
        }
    }
}
