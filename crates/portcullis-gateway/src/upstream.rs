//! Connections to the upstreams: HTTP/1.1, one pool per event loop.
//!
//! An event loop reuses only the connections it opened, which live on its
//! own runtime: a request never waits on another thread's pool, and its
//! pool needs no lock. Upstreams are numbered at start, so finding a pool
//! hashes nothing.
//!
//! Why not hyper-util's legacy client, which this replaces: per request
//! it hashed its pool key with SipHash a byte at a time (`Authority`'s
//! `Hash`) three times, boxed a 3 KB future, put two `Extensions` entries
//! and a pool waiter on the heap — about a ninth of the gateway's
//! instructions and six of its allocations per proxied request
//! (docs/benchmarks.md, "Our own upstream pool").
//!
//! A connection goes back to its pool as soon as its response's head
//! arrives and is taken again only once hyper says it is ready (the
//! previous exchange finished both ways); a closed one is dropped when
//! met. A connection that answered before its request's body was all
//! read is never reused: were the upstream to leave the rest of that
//! body unread, its bytes would be parsed as the next client's request.
//! Each thread's pool is swept every `IDLE_TIMEOUT / 2` for connections
//! unused that long.

use crate::proxy::UPSTREAM_READ_BUF;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// How long a connection may sit unused in a pool before it is closed
/// (by the next sweep or the next request to its upstream; the upstream
/// usually closes it sooner).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an upstream is: an address, or a name resolved at each connect
/// (so a service behind DNS may move).
#[derive(Debug, Clone)]
enum Place {
    Addr(SocketAddr),
    Name(String, u16),
    /// Not `http://host:port` (config refuses such an origin at start).
    Invalid,
}

/// The upstreams' connection pools, one set per thread.
pub struct Pools {
    places: Vec<Place>,
    pools: ThreadLocal<RefCell<Vec<Vec<Idle>>>>,
    connect_timeout: Duration,
    /// Idle connections each thread keeps to one upstream: its share of
    /// the upstream's budget.
    max_idle: usize,
    /// Connections each thread keeps to one upstream, busy or idle: the
    /// whole budget (busy ones are bounded by it already).
    max_kept: usize,
}

struct Idle {
    tx: http1::SendRequest<Body>,
    since: Instant,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out).
    Connect(String),
    /// The connection failed while the request was sent or the
    /// response's head awaited.
    Request(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "cannot connect: {e}"),
            SendError::Request(e) => write!(f, "{e}"),
        }
    }
}

impl Pools {
    /// Pools for `origins` (numbered in this order), keeping at most
    /// `max_idle` idle and `max_kept` in all per thread to each.
    pub fn new<'a>(
        origins: impl IntoIterator<Item = &'a str>,
        connect_timeout: Duration,
        max_idle: usize,
        max_kept: usize,
    ) -> Pools {
        Pools {
            places: origins
                .into_iter()
                .map(|o| place(o).unwrap_or(Place::Invalid))
                .collect(),
            pools: ThreadLocal::new(),
            connect_timeout,
            max_idle: max_idle.max(1),
            max_kept: max_kept.max(max_idle).max(1),
        }
    }

    /// Sends `req` (origin-form target, `Host` set) to upstream `i`: on a
    /// pooled connection when one is ready, else on a new one. A request
    /// a pooled connection could not take (it closed meanwhile) is sent
    /// on the next, never one that may have reached the upstream.
    pub async fn send(
        self: &Arc<Self>,
        i: usize,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        // Whether the request's body was read to its end when the answer
        // came; a bodyless request's always was.
        let (mut req, sent) = if http_body::Body::is_end_stream(req.body()) {
            (req, None)
        } else {
            let done = Arc::new(AtomicBool::new(false));
            let (parts, body) = req.into_parts();
            let body = Body::new(Watched {
                inner: body,
                done: done.clone(),
            });
            (Request::from_parts(parts, body), Some(done))
        };
        let reusable = |sent: &Option<Arc<AtomicBool>>| {
            sent.as_ref().is_none_or(|d| d.load(Ordering::Acquire))
        };
        while let Some(mut tx) = self.take(i) {
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    if reusable(&sent) {
                        self.give(i, tx);
                    }
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut tx = self.connect(i).await?;
        let resp = tx.send_request(req).await.map_err(SendError::Request)?;
        if reusable(&sent) {
            self.give(i, tx);
        }
        Ok(resp)
    }

    /// This thread's pools, made on first use, with their sweeper.
    fn mine(self: &Arc<Self>) -> &RefCell<Vec<Vec<Idle>>> {
        self.pools.get_or(|| {
            tokio::spawn(sweep(Arc::downgrade(self)));
            RefCell::new(
                std::iter::repeat_with(Vec::new)
                    .take(self.places.len())
                    .collect(),
            )
        })
    }

    /// The most recently returned ready connection to `i`; closed and
    /// long-unused ones met on the way are dropped.
    fn take(self: &Arc<Self>, i: usize) -> Option<http1::SendRequest<Body>> {
        // Never re-entered: nothing below calls back into the pool.
        let mut pools = self.mine().try_borrow_mut().ok()?;
        let list = pools.get_mut(i)?;
        let now = Instant::now();
        // The oldest sit at the front.
        let stale = list
            .iter()
            .take_while(|c| now.saturating_duration_since(c.since) >= IDLE_TIMEOUT)
            .count();
        list.drain(..stale);
        let mut at = list.len();
        while at > 0 {
            at -= 1;
            if list[at].tx.is_closed() {
                list.remove(at);
            } else if list[at].tx.is_ready() {
                return Some(list.remove(at).tx);
            }
        }
        None
    }

    /// Returns a connection to `i`'s pool (busy until its response's body
    /// is read), or drops it when the pool is full. Past this thread's
    /// share, the oldest idle connections make room: busy ones are
    /// bounded by the upstream's budget, and dropping them would only
    /// open new connections for the next requests.
    fn give(self: &Arc<Self>, i: usize, tx: http1::SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        let Ok(mut pools) = self.mine().try_borrow_mut() else {
            return;
        };
        let Some(list) = pools.get_mut(i) else {
            return;
        };
        if list.len() >= self.max_idle {
            list.retain(|c| !c.tx.is_closed());
            // Room for this one among the idle (max_idle is at least 1).
            trim_idle(list, self.max_idle - 1);
        }
        if list.len() < self.max_kept {
            list.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// A new connection to `i`, its HTTP/1.1 task spawned on this
    /// thread's runtime.
    async fn connect(&self, i: usize) -> Result<http1::SendRequest<Body>, SendError> {
        let place = self
            .places
            .get(i)
            .ok_or_else(|| SendError::Connect("no such upstream".into()))?;
        let connecting = async {
            match place {
                Place::Addr(a) => tokio::net::TcpStream::connect(*a).await,
                Place::Name(h, p) => tokio::net::TcpStream::connect((h.as_str(), *p)).await,
                Place::Invalid => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the upstream is not http://HOST:PORT",
                )),
            }
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(SendError::Connect("timed out".into())),
            Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
        // Requests and responses are small and answered at once: no
        // Nagle delay.
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            // What one upstream connection buffers for a response its
            // client is not reading (hyper's default is about 400 KiB).
            .max_buf_size(UPSTREAM_READ_BUF)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Request)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}

/// Closes, every `IDLE_TIMEOUT / 2`, this thread's connections that are
/// closed or were idle for `IDLE_TIMEOUT`, so a quiet loop does not keep
/// them open for the upstream, and trims the idle ones to this thread's
/// share (busy connections that finished since they were given back are
/// otherwise trimmed only at the next `give`); ends with the pools.
async fn sweep(pools: Weak<Pools>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(p) = pools.upgrade() else {
            return;
        };
        let Some(mine) = p.pools.get() else {
            return;
        };
        let Ok(mut lists) = mine.try_borrow_mut() else {
            continue;
        };
        let now = Instant::now();
        for list in lists.iter_mut() {
            list.retain(|c| {
                let unused =
                    c.tx.is_ready() && now.saturating_duration_since(c.since) >= IDLE_TIMEOUT;
                !(c.tx.is_closed() || unused)
            });
            trim_idle(list, p.max_idle);
        }
    }
}

/// Drops the oldest idle connections in `list` (they sit at the front)
/// until at most `keep` are idle; busy ones stay.
fn trim_idle(list: &mut Vec<Idle>, keep: usize) {
    let mut extra = list
        .iter()
        .filter(|c| c.tx.is_ready())
        .count()
        .saturating_sub(keep);
    list.retain(|c| {
        let drop = extra > 0 && c.tx.is_ready();
        if drop {
            extra -= 1;
        }
        !drop
    });
}

/// A request body that says when it was read to its end.
struct Watched {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Release);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where `http://host:port` connects: an address when the host is one,
/// else the name (resolved at each connect).
fn place(origin: &str) -> Option<Place> {
    let uri: http::Uri = origin.parse().ok()?;
    let auth = uri.authority()?;
    let port = auth.port_u16().unwrap_or(80);
    let host = auth.host();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => Place::Addr(SocketAddr::new(ip, port)),
        Err(_) => Place::Name(bare.to_owned(), port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that answers every request on a connection with `body`
    /// (closing after `per_connection` answers), counting connections.
    async fn upstream(body: &'static str, per_connection: usize) -> (String, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", l.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_connection {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut b = [0u8; 1024];
                            match s.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&b[..n]),
                            }
                        }
                        buf.clear();
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (origin, accepted)
    }

    fn get() -> Request<Body> {
        Request::builder()
            .uri("/x")
            .header(http::header::HOST, "up")
            .body(Body::empty())
            .unwrap()
    }

    async fn text(r: Response<Incoming>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let (origin, accepted) = upstream("ok", usize::MAX).await;
        let pools = Arc::new(Pools::new([origin.as_str()], Duration::from_secs(2), 4, 8));
        for _ in 0..5 {
            let r = pools.send(0, get()).await.unwrap();
            assert_eq!(text(r).await, "ok");
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A body far bigger than one read: hyper reads it only as it is
    /// taken, so its connection stays busy until then. (A small body
    /// arrives whole with its head, and its connection is free at once.)
    fn big() -> &'static str {
        Box::leak("x".repeat(1 << 20).into_boxed_str())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_whose_body_is_unread_is_not_taken() {
        let body = big();
        let (origin, accepted) = upstream(body, usize::MAX).await;
        let pools = Arc::new(Pools::new([origin.as_str()], Duration::from_secs(2), 4, 8));
        let held = pools.send(0, get()).await.unwrap();
        let r = pools.send(0, get()).await.unwrap();
        assert_eq!(text(r).await.len(), body.len());
        assert_eq!(text(held).await.len(), body.len());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        // One answer per connection, then the upstream closes it.
        let (origin, accepted) = upstream("ok", 1).await;
        let pools = Arc::new(Pools::new([origin.as_str()], Duration::from_secs(2), 4, 8));
        for _ in 0..3 {
            let r = pools.send(0, get()).await.unwrap();
            assert_eq!(text(r).await, "ok");
            // Let the connection's task see the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn busy_connections_are_kept_and_idle_ones_to_the_share() {
        let body = big();
        let (origin, accepted) = upstream(body, usize::MAX).await;
        // One idle connection per thread, four in all.
        let pools = Arc::new(Pools::new([origin.as_str()], Duration::from_secs(2), 1, 4));
        let a = pools.send(0, get()).await.unwrap();
        let b = pools.send(0, get()).await.unwrap();
        assert_eq!(pools.mine().borrow()[0].len(), 2, "both busy ones are kept");
        assert_eq!(text(a).await.len(), body.len());
        assert_eq!(text(b).await.len(), body.len());
        tokio::task::yield_now().await;
        // Both idle now: the next request takes one, and giving it back
        // trims the idle ones to the share.
        let c = pools.send(0, get()).await.unwrap();
        assert_eq!(text(c).await.len(), body.len());
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "no third connection");
        assert_eq!(pools.mine().borrow()[0].len(), 1);
    }

    /// A body whose chunks come down a channel; it ends when the sender
    /// is dropped.
    struct Chan(tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>);

    impl http_body::Body for Chan {
        type Data = bytes::Bytes;
        type Error = axum::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_that_answered_before_the_body_ended_is_not_reused() {
        // The upstream answers on the head alone and never reads the body.
        // The body, sent after that answer, is the start of a request
        // whose head the next request on the connection would complete:
        // reused, that connection would give the next request the answer
        // to the smuggled one.
        let (origin, accepted) = upstream("early", usize::MAX).await;
        let pools = Arc::new(Pools::new([origin.as_str()], Duration::from_secs(2), 4, 8));
        let smuggled: &[u8] = b"GET /smuggled HTTP/1.1\r\nX: ";
        let (more, rx) = tokio::sync::mpsc::unbounded_channel();
        let req = Request::builder()
            .method("POST")
            .uri("/x")
            .header(http::header::HOST, "up")
            .header(http::header::CONTENT_LENGTH, smuggled.len())
            .body(Body::new(Chan(rx)))
            .unwrap();
        let r = pools.send(0, req).await.unwrap();
        assert_eq!(text(r).await, "early");
        more.send(bytes::Bytes::from_static(smuggled)).unwrap();
        drop(more);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = pools.send(0, get()).await.unwrap();
        assert_eq!(text(r).await, "early");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the first connection was reused after answering early"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_early_answer_keeps_its_budget_place_until_the_request_body_ends() {
        let (origin, _) = upstream("early", usize::MAX).await;
        let proxy = crate::proxy::Proxy::new(
            Duration::from_secs(2),
            [origin.as_str()],
            4,
            Duration::from_secs(1),
            1,
        );
        let (more, rx) = tokio::sync::mpsc::unbounded_channel();
        let req = Request::builder()
            .method("POST")
            .uri("/x")
            .header(http::header::HOST, "up")
            .header(http::header::CONTENT_LENGTH, 3)
            .body(Body::new(Chan(rx)))
            .unwrap();
        let r = proxy
            .send(req, &origin, Duration::from_secs(2))
            .await
            .unwrap();
        let got = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"early");
        assert_eq!(
            proxy.in_use(&origin, 4),
            1,
            "the request body still holds its place"
        );
        more.send(bytes::Bytes::from_static(b"abc")).unwrap();
        drop(more);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(proxy.in_use(&origin, 4), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connection_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let pools = Arc::new(Pools::new([origin.as_str()], Duration::from_secs(2), 1, 1));
        let e = pools.send(0, get()).await.unwrap_err();
        assert!(matches!(e, SendError::Connect(_)), "{e}");
        let bad = Arc::new(Pools::new(["not a url"], Duration::from_secs(2), 1, 1));
        assert!(matches!(
            bad.send(0, get()).await.unwrap_err(),
            SendError::Connect(_)
        ));
    }

    #[test]
    fn origins_name_their_places() {
        let a = |o: &str| format!("{:?}", place(o));
        assert_eq!(a("http://127.0.0.1:8080"), "Some(Addr(127.0.0.1:8080))");
        assert_eq!(a("http://[::1]:9"), "Some(Addr([::1]:9))");
        assert_eq!(a("http://127.0.0.1"), "Some(Addr(127.0.0.1:80))");
        assert_eq!(
            a("http://app.internal:81"),
            "Some(Name(\"app.internal\", 81))"
        );
        assert_eq!(a("not a url"), "None");
    }
}
