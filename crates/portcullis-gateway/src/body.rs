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
