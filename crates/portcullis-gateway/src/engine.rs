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
use portcullis::pipeline::AddressBlock;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot, watch};

/// Pending connections the kernel queues per socket.
const BACKLOG: u32 = 1024;

/// Binds `n` sockets to `addr`, with `SO_REUSEPORT` when there are more
/// than one. The first is bound to `addr` as written; the others to the
/// address it got, so a port of 0 means one port for every loop.
///
/// `SO_REUSEPORT` would also let Portcullis join a group some other
/// process (of the same user) already holds on that port, and share its
/// connections with it, silently: so a fixed port is first bound without
/// it, and a port in use is the start-up error it always was.
pub fn bind(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    let n = n.max(1);
    if addr.port() != 0 {
        // Dropped at once: it only proves nobody else holds the port.
        bind_one(addr, false).with_context(|| format!("cannot listen on {addr}"))?;
    }
    let first = bind_one(addr, n > 1).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(bind_one(bound, true).with_context(|| format!("cannot listen on {bound}"))?);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr, reuseport: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuseport {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    // Registered with the runtime that serves it, not this one (so this
    // runs inside a runtime: tokio's listen registers before into_std).
    socket.listen(BACKLOG)?.into_std()
}

/// Blocking threads per loop (upstream DNS lookups run there): a few
/// each, not tokio's default of 512 per runtime.
const BLOCKING_THREADS: usize = 16;

/// Serves each of `sockets` on its own thread with its own
/// single-threaded runtime until `shutdown` flips and open requests end;
/// connections from an address `blocked` refuses are held unread or reset
/// at accept ([`crate::hold`]).
pub fn spawn<F, Fut>(
    sockets: Vec<std::net::TcpListener>,
    blocked: Option<Arc<AddressBlock>>,
    cfg: Arc<Config>,
    transport: Transport,
    handler: F,
    shutdown: watch::Receiver<bool>,
) -> Result<Loops>
where
    F: Fn(Conn, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let gate = Gate::new(&cfg).refusing(blocked);
    let (ended_tx, ended) = mpsc::unbounded_channel::<()>();
    let (release_tx, release) = watch::channel(false);
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
        let mut release = release.clone();
        let ended = Ended(ended_tx.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(BLOCKING_THREADS)
            .build()
            .context("cannot start an event loop")?;
        std::thread::Builder::new()
            .name(format!("portcullis-{i}"))
            .spawn(move || {
                // Says the loop ended when the thread does, a panic included.
                let _ended = ended;
                rt.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(l) => {
                            crate::serve::run_gated(l, gate, cfg, transport, handler, shutdown)
                                .await
                        }
                        Err(e) => tracing::error!(error = %e, "event loop cannot take its socket"),
                    }
                });
                let _ = tx.send(());
                // Connections this loop opened (Redis, the store's pool)
                // are driven by its runtime: it keeps running until the
                // main thread's last flushes are done.
                rt.block_on(async move {
                    let _ = release.wait_for(|r| *r).await;
                });
            })
            .context("cannot start an event loop thread")?;
        done.push(rx);
    }
    Ok(Loops {
        done,
        ended,
        release: release_tx,
    })
}

/// Sends on drop: the thread it lives in has ended, however.
struct Ended(mpsc::UnboundedSender<()>);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// The running loops.
pub struct Loops {
    done: Vec<oneshot::Receiver<()>>,
    ended: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
}

impl Loops {
    /// Completes if a loop stops before shutdown (it panicked): the
    /// gateway must not go on serving with fewer loops unnoticed.
    pub async fn ended_early(&mut self) {
        let _ = self.ended.recv().await;
    }

    /// Waits for every loop to stop serving (after shutdown and its
    /// grace); their runtimes keep running until [`Loops::release`].
    pub async fn join(&mut self) {
        for d in self.done.iter_mut() {
            // An error means the thread ended without saying so (a
            // panic): it has stopped either way.
            let _ = d.await;
        }
    }

    /// Lets the loops' runtimes end.
    pub fn release(self) {
        self.release.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_port_another_socket_holds_is_refused_even_with_reuseport() {
        // Someone else's group on the port: joining it would share our
        // connections with them.
        let theirs = bind_one("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = theirs.local_addr().unwrap();
        for n in [1, 2] {
            let e = bind(addr, n).unwrap_err();
            assert!(format!("{e:#}").contains("cannot listen on"), "{e:#}");
        }
    }

    #[tokio::test]
    async fn every_loop_gets_a_socket_on_one_port() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(socks.len(), 3);
        let port = socks[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(socks.iter().all(|s| s.local_addr().unwrap().port() == port));
        // A fixed, free port: the probe does not keep it.
        drop(socks);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        assert_eq!(bind(addr, 2).unwrap().len(), 2);
    }
}
