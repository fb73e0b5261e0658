//! What a connection is doing, and the watchdog that ends it when it has
//! done nothing for too long.
//!
//! hyper's timers cover part of a connection's life: the HTTP/1 header
//! timeout starts only once hyper has chosen the protocol, and HTTP/2
//! keep-alive PINGs close only peers that do not answer. A connection that
//! sends nothing, half a preface, or PING answers forever would live on.
//! So each connection counts its requests in flight and its responses
//! waiting on the client, and a watchdog task (one sleep per deadline, no
//! ticking) closes it at the first deadline that applies:
//!
//! - no request yet: `first_request_timeout` after accept;
//! - no request in flight: `idle_timeout` after the last one ended, or
//!   one second after it when the listener is full;
//! - a response waiting on a client that does not read (HTTP/1 socket
//!   full, HTTP/2 window shut): `send_timeout` after that response began
//!   waiting, whatever the connection's other streams do.
//!
//! A request whose upstream is slow has deadlines of its own (the route's
//! `timeout`, `body_read_timeout`), so it holds no connection deadline.

use crate::config::ConnLimits;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// One connection's state, shared by its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Requests whose response has not ended.
    in_flight: AtomicU32,
    /// Response bodies that gave the client data it has not taken yet:
    /// (body, since when, ms). Each stream has its own clock, so streams
    /// that make progress cannot keep a stalled one alive (found in
    /// review). A handful at most; the lock is the connection's own.
    waits: Mutex<Vec<(u32, u64)>>,
    next_body: AtomicU32,
    /// Whether any request arrived.
    served: AtomicBool,
    /// Milliseconds since `start` of the last progress.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            waits: Mutex::new(Vec::new()),
            next_body: AtomicU32::new(0),
            served: AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the connection was accepted.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.touch_at(self.now_ms());
    }

    fn touch_at(&self, now_ms: u64) {
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    /// A request arrived; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight {
            act: self.clone(),
            id: self.next_body.fetch_add(1, Ordering::Relaxed),
            waiting: false,
        }
    }

    /// The next deadline (ms since accept) and its name, if one applies.
    fn deadline(&self, l: &ConnLimits) -> Option<(u64, &'static str)> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            Some(if self.served.load(Ordering::Relaxed) {
                (last.saturating_add(ms(l.idle_timeout)), "idle_timeout")
            } else {
                (
                    last.saturating_add(ms(l.first_request_timeout)),
                    "first_request_timeout",
                )
            })
        } else {
            let oldest = self
                .waits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|&(_, since)| since)
                .min()?;
            Some((oldest.saturating_add(ms(l.send_timeout)), "send_timeout"))
        }
    }
}

/// A request in flight; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    act: Arc<Activity>,
    id: u32,
    waiting: bool,
}

impl InFlight {
    fn set_waiting(&mut self, w: bool) {
        let now = self.act.now_ms();
        if self.waiting != w {
            self.waiting = w;
            let mut waits = self.act.waits.lock().unwrap_or_else(|p| p.into_inner());
            if w {
                waits.push((self.id, now));
            } else {
                waits.retain(|&(id, _)| id != self.id);
            }
        }
        self.act.touch_at(now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.waiting {
            self.set_waiting(false);
        }
        self.act.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.act.touch();
    }
}

/// The response body, followed: the request ends when the body does (or
/// is dropped), and data handed over and not yet taken counts as waiting
/// on the client.
pub fn track(body: Body, guard: InFlight) -> Body {
    Body::new(Tracked {
        inner: body,
        guard: Some(guard),
    })
}

struct Tracked {
    inner: Body,
    guard: Option<InFlight>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // Polled again: the client took what it was given.
        if let Some(g) = &mut this.guard
            && g.waiting
        {
            g.set_waiting(false);
        }
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) if f.is_data() => {
                if let Some(g) = &mut this.guard {
                    g.set_waiting(true);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.guard = None;
            }
            _ => {}
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

/// How long an idle connection may stay once the listener is full.
const PRESSURE_GRACE_MS: u64 = 1000;

/// Resolves when the connection should be closed, with the reason.
pub async fn watchdog(
    act: &Activity,
    limits: &ConnLimits,
    pressure: &mut watch::Receiver<bool>,
) -> &'static str {
    let mut listen = true;
    loop {
        let idle = act.in_flight.load(Ordering::Relaxed) == 0;
        let now = act.now_ms();
        // With no deadline (a request in flight, nothing waiting on the
        // client), look again after send_timeout: a wait may have begun.
        let (mut due, mut reason) = act.deadline(limits).unwrap_or((
            now.saturating_add(u64::try_from(limits.send_timeout.as_millis()).unwrap_or(u64::MAX)),
            "",
        ));
        // A full listener: idle connections get PRESSURE_GRACE_MS (a new
        // client has that long to send its request), then go.
        if idle && listen && *pressure.borrow_and_update() {
            let grace = act
                .last_ms
                .load(Ordering::Relaxed)
                .saturating_add(PRESSURE_GRACE_MS);
            if grace < due {
                (due, reason) = (grace, "idle_under_pressure");
            }
        }
        if now >= due && !reason.is_empty() {
            return reason;
        }
        // Never longer than send_timeout: a deadline that applies later
        // (a response that starts waiting on the client) is not missed by
        // a sleep toward a longer one (found side by side with nginx).
        let send_ms = u64::try_from(limits.send_timeout.as_millis()).unwrap_or(u64::MAX);
        let nap = due.saturating_sub(now).clamp(1, send_ms.max(1));
        let sleep = tokio::time::sleep(Duration::from_millis(nap));
        if listen {
            tokio::select! {
                () = sleep => {}
                changed = pressure.changed() => {
                    // The listener is gone: stop listening for pressure.
                    if changed.is_err() {
                        listen = false;
                    }
                }
            }
        } else {
            sleep.await;
        }
    }
}
