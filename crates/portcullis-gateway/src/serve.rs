//! Listeners: our own accept loop so the header-read timeout is real
//! (axum::serve installs no timer), caps on connections overall and per
//! client address, TLS handshakes under a timeout, every HTTP/1 byte
//! stream watched for ambiguous framing, and graceful shutdown that lets
//! in-flight requests finish.
//!
//! Every connection is held to deadlines by its own watchdog
//! ([`crate::conn_watch`]): the first request head within
//! `first_request_timeout` of accept (TLS handshake, protocol detection
//! and the HTTP/2 preface included), no more than `idle_timeout` with no
//! request in flight (HTTP/1.1 and HTTP/2 alike: a peer that answers PINGs
//! is still idle), and no more than `send_timeout` with a response the
//! client does not read. When the listener is full, idle connections are
//! closed first. HTTP/2 is served where ALPN chose it (or on a plain
//! listener with `server.h2c`), with its control frames counted
//! ([`portcullis_core::h2frames`]).

use crate::config::{Config, ConnLimits};
use crate::conn_watch::{self, Activity};
use crate::hold::Holds;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use portcullis::pipeline::AddressBlock;
use portcullis_core::framing::{Ambiguity, H1Framer};
use portcullis_core::h2frames::{ENHANCE_YOUR_CALM, H2Out, H2Watch, goaway};
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

/// What every event loop serving one listener shares: the connection
/// table (overall and per client address), and whether it is full. Each
/// is touched once per connection, never per request.
#[derive(Clone)]
pub struct Gate {
    permits: Arc<Semaphore>,
    max_connections: usize,
    per_ip: Arc<PerIp>,
    pressure_tx: Arc<watch::Sender<bool>>,
    pressure: watch::Receiver<bool>,
    blocked: Option<Arc<AddressBlock>>,
    holds: Arc<Holds>,
}

impl Gate {
    /// The table for one listener, sized by the config.
    pub fn new(cfg: &Config) -> Gate {
        let (pressure_tx, pressure) = watch::channel(false);
        Gate {
            permits: Arc::new(Semaphore::new(cfg.max_connections)),
            max_connections: cfg.max_connections,
            per_ip: Arc::new(PerIp::new(
                cfg.max_connections_per_ip,
                cfg.trusted_proxies.clone(),
            )),
            pressure_tx: Arc::new(pressure_tx),
            pressure,
            blocked: None,
            // Held connections take no place in the table: a tenth of it
            // at most, and never more than [`crate::hold::MAX_TOTAL`].
            holds: Holds::new((cfg.max_connections / 10).clamp(1, crate::hold::MAX_TOTAL)),
        }
    }

    /// Refuses each new connection from an address `block` has blocked at
    /// accept, before a byte of it is read or a place in the table is
    /// taken ([`AddressBlock::refuses_connection`]): held unread until the
    /// block ends, within bounds, else reset ([`crate::hold`]).
    pub fn refusing(mut self, block: Option<Arc<AddressBlock>>) -> Gate {
        self.blocked = block;
        self
    }
}

/// Serves `listener` until `shutdown` flips, then waits up to the grace
/// period for open requests.
pub async fn run<F, Fut>(
    listener: TcpListener,
    cfg: Arc<Config>,
    transport: Transport,
    handler: F,
    shutdown: watch::Receiver<bool>,
) where
    F: Fn(Conn, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let gate = Gate::new(&cfg);
    run_gated(listener, gate, cfg, transport, handler, shutdown).await
}

/// [`run`] for one of several event loops accepting on the same address
/// (each its own `SO_REUSEPORT` socket), all counted in one `gate`.
pub async fn run_gated<F, Fut>(
    listener: TcpListener,
    gate: Gate,
    cfg: Arc<Config>,
    transport: Transport,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
) where
    F: Fn(Conn, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let Gate {
        permits,
        max_connections,
        per_ip,
        pressure_tx,
        pressure,
        blocked,
        holds,
    } = gate;
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
        .max_concurrent_streams(cfg.conn.h2_max_streams)
        // Memory per stream is bounded by these: what a client may send
        // before we read it, and what we queue for a client that does not
        // read (hyper's default is 400 KiB a stream).
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_SEND_BUF)
        .keep_alive_interval(Some(cfg.header_read_timeout))
        .keep_alive_timeout(cfg.header_read_timeout);
    let builders = Arc::new(Builders {
        h1: builder.clone().http1_only(),
        h2: builder.clone().http2_only(),
        auto: builder,
    });
    loop {
        // Accept first, then take a place: a loop waiting for its next
        // connection holds no place, so N loops sharing the table can
        // still fill it to `max_connections`.
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
        if let Some(left) = blocked
            .as_ref()
            .and_then(|b| b.refuses_connection(peer.ip()))
        {
            // Reset, not a FIN: no TIME_WAIT kept for a flood.
            let _ = stream.set_zero_linger();
            if let Some(held) = holds.hold(peer.ip()) {
                let until = std::time::Duration::from_secs(left).min(crate::hold::MAX_HOLD);
                let mut shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(until) => {}
                        _ = shutdown.changed() => {}
                    }
                    drop(stream);
                    drop(held);
                });
            } else {
                drop(stream);
            }
            // One refusal per turn: a flood reconnecting as fast as it
            // is refused does not keep this loop from its other tasks.
            tokio::task::yield_now().await;
            continue;
        }
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: idle connections give their places up first, so a
                // table of connections that say nothing cannot lock out
                // clients that have something to ask. This connection
                // waits (unserved) for the first place freed.
                pressure_tx.send_replace(true);
                tracing::debug!("connection table full: closing idle connections");
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = shutdown.changed() => break,
                }
            }
        };
        if *pressure_tx.borrow() && permits.available_permits() > max_connections / 10 {
            pressure_tx.send_replace(false);
        }
        let Some(slot) = per_ip.enter(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let serve = Serve {
            peer,
            builders: builders.clone(),
            watcher: graceful.watcher(),
            max_head: hyper_buf_size(cfg.max_header_bytes),
            activity: Arc::new(Activity::new()),
            limits: cfg.conn.clone(),
            pressure: pressure.clone(),
        };
        let (t, h, hs) = (
            transport.clone(),
            handler.clone(),
            cfg.tls_handshake_timeout
                .min(cfg.conn.first_request_timeout),
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

/// HTTP/2 receive window per stream: what a client may send on a stream
/// before Portcullis has passed it on.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 receive window per connection.
pub const H2_CONN_WINDOW: u32 = 1024 * 1024;
/// Response bytes queued per HTTP/2 stream for a client that does not read.
pub const H2_SEND_BUF: usize = 64 * 1024;

/// One builder per protocol choice.
struct Builders {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
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
        Transport::Plain => {
            // HTTP/2 in clear text only when asked for: a client that
            // speaks it unasked gets an HTTP/1.1 400.
            let h2 = if serve.limits.h2c {
                Proto::Either
            } else {
                Proto::H1
            };
            serve.io(stream, false, h2, handler).await
        }
        Transport::Tls(acceptor) => {
            // tokio-rustls has no handshake timeout of its own; a client
            // that opens a socket and says nothing must not hold it.
            let peer = serve.peer;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // The protocol ALPN chose, and only that one.
                    let proto = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        Proto::H2
                    } else {
                        Proto::H1
                    };
                    serve.io(tls, true, proto, handler).await
                }
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Which HTTP a connection may speak.
#[derive(Clone, Copy)]
enum Proto {
    H1,
    H2,
    Either,
}

/// A connection ready for HTTP.
struct Serve {
    peer: SocketAddr,
    builders: Arc<Builders>,
    watcher: Watcher,
    max_head: usize,
    activity: Arc<Activity>,
    limits: ConnLimits,
    pressure: watch::Receiver<bool>,
}

impl Serve {
    async fn io<IO, F, Fut>(self, io: IO, tls: bool, proto: Proto, handler: F)
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
        let rate = self.limits.h2_control_frames_per_second;
        let io = Watched {
            inner: io,
            framer: H1Framer::new(self.max_head),
            flag: conn.framing.clone(),
            h2: H2Watch::new(rate, rate.saturating_mul(10).max(100)),
            out: H2Out::default(),
            activity: self.activity.clone(),
            peer: self.peer,
            linger: None,
        };
        let act = self.activity.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (h, c, act) = (handler.clone(), conn.clone(), act.clone());
            async move {
                let guard = act.begin();
                // A request with no body gets the empty body, which
                // needs no box (most GETs: one allocation fewer).
                let req = if http_body::Body::is_end_stream(req.body()) {
                    req.map(|_| Body::empty())
                } else {
                    req.map(Body::new)
                };
                let resp = h(c, req).await;
                Ok::<_, Infallible>(resp.map(|b| conn_watch::track(b, guard)))
            }
        });
        let builder = match proto {
            Proto::H1 => &self.builders.h1,
            Proto::H2 => &self.builders.h2,
            Proto::Either => &self.builders.auto,
        };
        let c = builder.serve_connection(TokioIo::new(io), svc).into_owned();
        let mut pressure = self.pressure;
        tokio::select! {
            r = self.watcher.watch(c) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            reason = conn_watch::watchdog(&self.activity, &self.limits, &mut pressure) => {
                // Dropping the connection closes the socket.
                tracing::debug!(peer = %self.peer, reason, "connection closed");
            }
        }
    }
}

/// The read side of a connection, every byte also shown to an
/// [`H1Framer`] in order, so the handler learns of a smuggling attempt
/// that hyper would otherwise quietly reframe.
///
/// On HTTP/2 it also counts the client's control frames; past the rate it
/// writes a GOAWAY with `ENHANCE_YOUR_CALM` (when the server's own output
/// is between frames) and ends the connection.
struct Watched<IO> {
    inner: IO,
    framer: H1Framer,
    flag: Arc<OnceLock<Ambiguity>>,
    h2: H2Watch,
    out: H2Out,
    activity: Arc<Activity>,
    peer: SocketAddr,
    /// Set once a flood was answered: reads are dropped until it ends.
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a flooded connection is read (and what it sends dropped)
/// after its GOAWAY, so the close does not reset the GOAWAY away.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

fn flood_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "HTTP/2 control frame flood",
    )
}

/// Reads and drops until the peer closes or the linger ends, then fails.
fn linger_read<IO: AsyncRead + Unpin>(
    io: &mut IO,
    linger: &mut Pin<Box<tokio::time::Sleep>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if linger.as_mut().poll(cx).is_ready() {
        return Poll::Ready(Err(flood_error()));
    }
    let mut scratch = [0u8; 4096];
    // A bounded number of reads a turn, so a fast flood cannot spin here.
    for _ in 0..64 {
        let mut rb = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                return Poll::Ready(Err(flood_error()));
            }
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(flood_error())),
            Poll::Pending => return Poll::Pending,
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(linger) = &mut this.linger {
            return linger_read(&mut this.inner, linger, cx);
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let read = buf.filled().get(before..).unwrap_or(&[]);
            if this.flag.get().is_none()
                && let Some(a) = this.framer.feed(read)
            {
                let _ = this.flag.set(a);
            }
            if let Some(flood) = this.h2.feed(read, this.activity.now_ms()) {
                tracing::info!(peer = %this.peer, reason = flood.log_reason(), "HTTP/2 connection closed: ENHANCE_YOUR_CALM");
                if this.out.at_boundary() {
                    // Best effort: a GOAWAY the socket takes now, else none.
                    let g = goaway(this.h2.last_stream_id(), ENHANCE_YOUR_CALM);
                    if let Poll::Ready(Ok(17)) = Pin::new(&mut this.inner).poll_write(cx, &g) {
                        let _ = Pin::new(&mut this.inner).poll_flush(cx);
                        let _ = Pin::new(&mut this.inner).poll_shutdown(cx);
                    }
                }
                // Closing with the flood unread would reset the connection
                // and lose the GOAWAY: read and drop for a moment first.
                let linger = this.linger.insert(Box::pin(tokio::time::sleep(LINGER)));
                return linger_read(&mut this.inner, linger, cx);
            }
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
        let this = self.get_mut();
        if this.linger.is_some() {
            return Poll::Ready(Err(flood_error()));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if this.h2.is_h2()
            && let Poll::Ready(Ok(n)) = &r
        {
            this.out.feed(buf.get(..*n).unwrap_or(&[]));
        }
        r
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.linger.is_some() {
            return Poll::Ready(Err(flood_error()));
        }
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if this.h2.is_h2()
            && let Poll::Ready(Ok(n)) = &r
        {
            // The first n bytes across the slices were written.
            let mut left = *n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                this.out.feed(b.get(..take).unwrap_or(&[]));
                left -= take;
            }
        }
        r
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
