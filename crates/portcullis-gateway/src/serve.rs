//! Listeners: our own accept loop so the header-read timeout is real
//! (axum::serve installs no timer), caps on connections overall and per
//! client address, TLS handshakes under a timeout, every HTTP/1 byte
//! stream watched for ambiguous framing, and graceful shutdown that lets
//! in-flight requests finish.

use crate::config::Config;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use portcullis_core::framing::{Ambiguity, H1Framer};
use portcullis_core::net::{Cidr, is_trusted};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// How a listener's connections arrive.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS, terminated here.
    Tls(tokio_rustls::TlsAcceptor),
}

/// What the handler knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct Conn {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    framing: Arc<OnceLock<Ambiguity>>,
}

impl Conn {
    /// The ambiguous framing seen on this connection, if any: every
    /// request on it is then refused and the connection closed.
    pub fn ambiguity(&self) -> Option<Ambiguity> {
        self.framing.get().copied()
    }
}

/// Serves `listener` until `shutdown` flips, then waits up to the grace
/// period for open requests.
pub async fn run<F, Fut>(
    listener: TcpListener,
    cfg: Arc<Config>,
    transport: Transport,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(Conn, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let per_ip = Arc::new(PerIp::new(
        cfg.max_connections_per_ip,
        cfg.trusted_proxies.clone(),
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        // Room above the limit, so a head a little over it reaches the
        // handler and gets a problem+json 431 rather than hyper's empty one.
        .max_buf_size(hyper_buf_size(cfg.max_header_bytes))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(200)
        .keep_alive_interval(Some(cfg.header_read_timeout))
        .keep_alive_timeout(cfg.header_read_timeout);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(slot) = per_ip.enter(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let serve = Serve {
            peer,
            builder: builder.clone(),
            watcher: graceful.watcher(),
            max_head: hyper_buf_size(cfg.max_header_bytes),
        };
        let (t, h, hs) = (
            transport.clone(),
            handler.clone(),
            cfg.tls_handshake_timeout,
        );
        tokio::spawn(async move {
            accept(stream, t, hs, serve, h).await;
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period ended with requests still open");
    }
}

fn hyper_buf_size(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_mul(4).max(8192)
}

/// Accepts `stream` for HTTP: the TLS handshake first (under its
/// timeout) on a TLS listener.
async fn accept<F, Fut>(
    stream: TcpStream,
    transport: Transport,
    handshake_timeout: std::time::Duration,
    serve: Serve,
    handler: F,
) where
    F: Fn(Conn, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    match transport {
        Transport::Plain => serve.io(stream, false, handler).await,
        Transport::Tls(acceptor) => {
            // tokio-rustls has no handshake timeout of its own; a client
            // that opens a socket and says nothing must not hold it.
            let peer = serve.peer;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve.io(tls, true, handler).await,
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        }
    }
}

/// A connection ready for HTTP.
struct Serve {
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    max_head: usize,
}

impl Serve {
    async fn io<IO, F, Fut>(self, io: IO, tls: bool, handler: F)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Fn(Conn, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let conn = Conn {
            peer: self.peer,
            tls,
            framing: Arc::new(OnceLock::new()),
        };
        let io = Watched {
            inner: io,
            framer: H1Framer::new(self.max_head),
            flag: conn.framing.clone(),
        };
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (h, c) = (handler.clone(), conn.clone());
            async move { Ok::<_, Infallible>(h(c, req.map(Body::new)).await) }
        });
        let c = self
            .builder
            .serve_connection(TokioIo::new(io), svc)
            .into_owned();
        if let Err(e) = self.watcher.watch(c).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// The read side of a connection, every byte also shown to an
/// [`H1Framer`] in order, so the handler learns of a smuggling attempt
/// that hyper would otherwise quietly reframe.
struct Watched<IO> {
    inner: IO,
    framer: H1Framer,
    flag: Arc<OnceLock<Ambiguity>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r
            && this.flag.get().is_none()
            && let Some(a) = this.framer.feed(&buf.filled()[before..])
        {
            let _ = this.flag.set(a);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Open connections per client address. Trusted proxies are exempt: every
/// client behind them shares their address.
struct PerIp {
    max: usize,
    exempt: Vec<Cidr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A counted connection; dropping it frees the slot.
struct Slot {
    table: Option<(Arc<PerIp>, IpAddr)>,
}

impl PerIp {
    fn new(max: usize, exempt: Vec<Cidr>) -> PerIp {
        PerIp {
            max,
            exempt,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        if self.max == 0 || is_trusted(&self.exempt, ip) {
            return Some(Slot { table: None });
        }
        let ip = portcullis_core::net::counted_address(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: Some((self.clone(), ip)),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((t, ip)) = self.table.take() {
            let mut open = t.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}
