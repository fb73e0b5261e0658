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
//! and a pool waiter on the heap — about a twelfth of the gateway's
//! instructions and five of its allocations per proxied request
//! (docs/benchmarks.md, "Our own upstream pool").
//!
//! A connection goes back to its pool as soon as its response's head
//! arrives and is taken again only once hyper says it is ready (the
//! previous body read to its end); a closed one is dropped when met.

use crate::proxy::UPSTREAM_READ_BUF;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;

/// How long a connection may sit unused in a pool before it is closed
/// (when next met; the upstream usually closes it sooner).
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
    /// Connections each thread keeps to one upstream, busy or idle.
    max_idle: usize,
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
    /// `max_idle` connections per thread to each.
    pub fn new<'a>(
        origins: impl IntoIterator<Item = &'a str>,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Pools {
        Pools {
            places: origins
                .into_iter()
                .map(|o| place(o).unwrap_or(Place::Invalid))
                .collect(),
            pools: ThreadLocal::new(),
            connect_timeout,
            max_idle: max_idle.max(1),
        }
    }

    /// Sends `req` (origin-form target, `Host` set) to upstream `i`: on a
    /// pooled connection when one is ready, else on a new one. A request
    /// a pooled connection could not take (it closed meanwhile) is sent
    /// on the next, never one that may have reached the upstream.
    pub async fn send(
        &self,
        i: usize,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        while let Some(mut tx) = self.take(i) {
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    self.give(i, tx);
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
        self.give(i, tx);
        Ok(resp)
    }

    /// This thread's pools, made on first use.
    fn mine(&self) -> &RefCell<Vec<Vec<Idle>>> {
        self.pools.get_or(|| {
            RefCell::new(
                std::iter::repeat_with(Vec::new)
                    .take(self.places.len())
                    .collect(),
            )
        })
    }

    /// The most recently returned ready connection to `i`; closed and
    /// long-unused ones met on the way are dropped.
    fn take(&self, i: usize) -> Option<http1::SendRequest<Body>> {
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
    /// is read), or drops it when the pool is full.
    fn give(&self, i: usize, tx: http1::SendRequest<Body>) {
        if tx.is_closed() {
            return;
        }
        let Ok(mut pools) = self.mine().try_borrow_mut() else {
            return;
        };
        if let Some(list) = pools.get_mut(i)
            && list.len() < self.max_idle
        {
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
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
        let pools = Pools::new([origin.as_str()], Duration::from_secs(2), 4);
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
        let pools = Pools::new([origin.as_str()], Duration::from_secs(2), 4);
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
        let pools = Pools::new([origin.as_str()], Duration::from_secs(2), 4);
        for _ in 0..3 {
            let r = pools.send(0, get()).await.unwrap();
            assert_eq!(text(r).await, "ok");
            // Let the connection's task see the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_pool_keeps_at_most_its_share() {
        let body = big();
        let (origin, accepted) = upstream(body, usize::MAX).await;
        let pools = Pools::new([origin.as_str()], Duration::from_secs(2), 1);
        let a = pools.send(0, get()).await.unwrap();
        let b = pools.send(0, get()).await.unwrap();
        assert_eq!(text(a).await.len(), body.len());
        assert_eq!(text(b).await.len(), body.len());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pools.mine().borrow()[0].len(), 1, "the second was not kept");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connection_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let pools = Pools::new([origin.as_str()], Duration::from_secs(2), 1);
        let e = pools.send(0, get()).await.unwrap_err();
        assert!(matches!(e, SendError::Connect(_)), "{e}");
        let bad = Pools::new(["not a url"], Duration::from_secs(2), 1);
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
