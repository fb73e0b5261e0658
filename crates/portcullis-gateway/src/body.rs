//! Request bodies under a size limit and a deadline, enforced while they
//! stream (nothing is buffered to find out), so a chunked body over the
//! route's limit and a client trickling a body byte by byte are both cut
//! off, and the answer says which (413 or 408); a body whose framing
//! breaks (a malformed chunk) is the client's error, 400.

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use portcullis_core::{ErrorCode, Problem};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

const FINE: u8 = 0;
const TOO_LARGE: u8 = 1;
const TOO_SLOW: u8 = 2;
const MALFORMED: u8 = 3;

/// Why a body was cut off, readable after the body's reader gave up.
#[derive(Clone, Default)]
pub struct Cutoff(Arc<AtomicU8>);

impl Cutoff {
    /// The problem to answer, when the body was cut off.
    pub fn problem(&self) -> Option<Problem> {
        match self.0.load(Ordering::Acquire) {
            TOO_LARGE => Some(Problem::new(ErrorCode::PayloadTooLarge)),
            TOO_SLOW => Some(Problem::new(ErrorCode::RequestTimeout)),
            MALFORMED => Some(Problem::new(ErrorCode::MalformedBody)),
            _ => None,
        }
    }
}

/// The error a cut-off body yields to its reader.
#[derive(Debug, thiserror::Error)]
#[error("request body cut off")]
pub struct CutOff;

/// `body`, yielding an error once more than `limit` bytes have come or
/// `timeout` has passed since the first poll.
pub fn limit(body: Body, limit: usize, timeout: Duration, cutoff: &Cutoff) -> Body {
    Body::new(Limited {
        inner: body,
        remaining: limit,
        timeout,
        deadline: None,
        cutoff: cutoff.clone(),
    })
}

struct Limited {
    inner: Body,
    remaining: usize,
    timeout: Duration,
    // Created on first poll: a body nobody reads costs no timer.
    deadline: Option<Pin<Box<Sleep>>>,
    cutoff: Cutoff,
}

impl Limited {
    fn cut(&mut self, why: u8) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.cutoff.0.store(why, Ordering::Release);
        Poll::Ready(Some(Err(axum::Error::new(CutOff))))
    }
}

impl http_body::Body for Limited {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.cutoff.0.load(Ordering::Relaxed) != FINE {
            return Poll::Ready(None);
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if d.len() > this.remaining {
                        return this.cut(TOO_LARGE);
                    }
                    this.remaining -= d.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return this.cut(TOO_SLOW);
                }
                Poll::Pending
            }
            // The server could not read the body: a broken chunk, or the
            // connection ended before the declared length. The client's
            // fault, so a 400 rather than the upstream's 502.
            Poll::Ready(Some(Err(e))) => {
                this.cutoff.0.store(MALFORMED, Ordering::Release);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that holds `T` (an upstream connection's place in its budget)
/// until it ends or is dropped.
pub struct Hold<B, T> {
    inner: B,
    held: Option<T>,
}

impl<B, T> Hold<B, T> {
    /// `inner`, holding `held`.
    pub fn new(inner: B, held: T) -> Hold<B, T> {
        Hold {
            inner,
            held: Some(held),
        }
    }
}

impl<B, T> http_body::Body for Hold<B, T>
where
    B: http_body::Body + Unpin,
    T: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.held = None;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How much of a request body is read before an upstream connection is
/// taken: a body this small is forwarded whole, so a client trickling it
/// holds only its own connection.
pub const PREBUFFER: usize = 64 * 1024;

/// Reads `body` until [`PREBUFFER`] bytes have come or it ends, and gives
/// back a body that yields those frames first, then the rest. A client
/// that announces a body and sends it slowly (or never) is kept waiting
/// here, under `body_read_timeout`, without an upstream connection.
/// Errors (a cut-off or broken body) come back as a frame, so the
/// caller's usual path reports them.
pub async fn started(body: Body) -> Body {
    use http_body_util::BodyExt;
    if http_body::Body::is_end_stream(&body) {
        return body;
    }
    let mut body = body;
    let mut first = std::collections::VecDeque::new();
    let mut have = 0usize;
    while have < PREBUFFER {
        match body.frame().await {
            None => break,
            Some(Ok(f)) => {
                have += f.data_ref().map_or(0, Bytes::len);
                first.push_back(Ok(f));
            }
            Some(Err(e)) => {
                first.push_back(Err(e));
                break;
            }
        }
    }
    Body::new(Prefixed { first, rest: body })
}

struct Prefixed {
    first: std::collections::VecDeque<Result<Frame<Bytes>, axum::Error>>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.first.pop_front() {
            return Poll::Ready(Some(f));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let n: u64 = self
            .first
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64))
            .sum();
        // Upper first: SizeHint refuses a lower bound above its upper one.
        let mut h = SizeHint::new();
        if let Some(u) = rest.upper() {
            h.set_upper(u.saturating_add(n));
        }
        h.set_lower(rest.lower().saturating_add(n));
        h
    }
}
