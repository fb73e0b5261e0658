//! Connections of blocked addresses, held unread until their block ends.
//!
//! A flood is usually a fixed set of keep-alive connections, each sending
//! its next request as soon as the last is answered. Reset at accept, such
//! a connection is opened again at once: tens of thousands of handshakes
//! a second, each an `accept` and a `close` on the event loop valid
//! clients share. Held open and never read instead, it sends nothing more:
//! its request waits in the kernel's buffer until the block ends and the
//! connection is reset. Holding is bounded: [`PER_ADDRESS`] connections
//! per address (an IPv4 address, an IPv6 /64); in all, a tenth of
//! `server.max_connections` and at most [`MAX_TOTAL`]; never past the
//! block nor [`MAX_HOLD`]. Past the bounds a connection is reset at once.
//! Held connections take descriptors beside the connection table's: size
//! the descriptor limit for `max_connections` plus these.

use portcullis_core::client_bucket::ClientBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections held per blocked address: more than the keep-alive pool
/// of common load tools (wrk, hey, ab: tens of connections), so such a
/// flood stops altogether; a few blocked addresses can still not take
/// every place.
pub const PER_ADDRESS: u32 = 256;
/// The most connections held at once on one listener, whatever
/// `server.max_connections` is: each holds a descriptor and up to a
/// receive window of unread bytes beside the connection table.
pub const MAX_TOTAL: usize = 1024;
/// The longest a connection is held.
pub const MAX_HOLD: Duration = Duration::from_secs(30);

/// The held connections, counted per address and in all. Touched only on
/// the refusal path, never for a request.
pub struct Holds {
    total: usize,
    held: Mutex<Counts>,
}

/// Held connections per address, and their sum.
#[derive(Default)]
struct Counts {
    by: HashMap<ClientBucket, u32>,
    all: usize,
}

/// A place among the held connections, given back when dropped.
pub struct Held {
    holds: Arc<Holds>,
    bucket: ClientBucket,
}

impl Holds {
    /// Room for at most `total` connections held at once.
    pub fn new(total: usize) -> Arc<Holds> {
        Arc::new(Holds {
            total,
            held: Mutex::new(Counts::default()),
        })
    }

    /// A place for one more held connection of `peer`, when there is room.
    pub fn hold(self: &Arc<Holds>, peer: IpAddr) -> Option<Held> {
        let bucket = ClientBucket::of(peer);
        // Poisoned only by a panic while counting; counting on is right.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.all >= self.total {
            return None;
        }
        let n = held.by.entry(bucket).or_insert(0);
        if *n >= PER_ADDRESS {
            return None;
        }
        *n += 1;
        held.all += 1;
        Some(Held {
            holds: self.clone(),
            bucket,
        })
    }

    /// Connections held now.
    #[cfg(test)]
    fn count(&self) -> u32 {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(held.by.values().sum::<u32>() as usize, held.all);
        held.by.values().sum()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.holds.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.by.get_mut(&self.bucket) {
            *n -= 1;
            if *n == 0 {
                held.by.remove(&self.bucket);
            }
            held.all -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bounded_per_address_and_in_all_and_given_back() {
        let h = Holds::new(PER_ADDRESS as usize + 8);
        let a: Vec<Held> = (0..PER_ADDRESS)
            .map(|_| h.hold(ip("192.0.2.1")).unwrap())
            .collect();
        assert!(h.hold(ip("192.0.2.1")).is_none(), "per address");
        // The same /64 is one address.
        let b1 = h.hold(ip("2001:db8::1")).unwrap();
        let b2 = h.hold(ip("2001:db8::2")).unwrap();
        let c: Vec<Held> = (0..2).map(|_| h.hold(ip("192.0.2.3")).unwrap()).collect();
        assert_eq!(h.count(), PER_ADDRESS + 4);
        let more: Vec<Held> = (0..10).filter_map(|_| h.hold(ip("192.0.2.4"))).collect();
        assert_eq!(more.len(), 4, "in all");
        drop(c);
        drop((b1, b2));
        drop(more);
        drop(a);
        assert_eq!(h.count(), 0);
        assert!(h.hold(ip("192.0.2.1")).is_some());
    }
}
