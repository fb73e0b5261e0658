//! A TCP forwarder between a gateway and its Postgres that can be cut to
//! play a network partition: while cut, bytes are held, not forwarded, and
//! every connection stays open — packets vanish, no RST, no FIN — so the
//! gateway learns of the partition only through its own timeouts, as it
//! would on a real network. Healing forwards what was held (TCP's
//! retransmission, in effect) and carries on.
//!
//! Plain threads: two pumps per connection, each blocking on a read, then
//! waiting at the gate before it writes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// A forwarder from a loopback port to `target`.
pub struct FaultProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Starts forwarding every connection to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (c, s, a) = (cut.clone(), stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                let (c, s) = (c.clone(), s.clone());
                std::thread::spawn(move || connect(client, target, &c, &s));
            }
        });
        FaultProxy {
            port,
            cut,
            stop,
            accepted,
        }
    }

    /// The port to point the gateway at.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Partition: from now on nothing passes, in either direction, on any
    /// connection, old or new; nothing is closed.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Heal: what was held is delivered, and traffic flows again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Waits while the link is cut; false when the proxy is being dropped.
fn gate(cut: &AtomicBool, stop: &AtomicBool) -> bool {
    while cut.load(Ordering::SeqCst) {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    !stop.load(Ordering::SeqCst)
}

fn connect(client: TcpStream, target: SocketAddr, cut: &Arc<AtomicBool>, stop: &Arc<AtomicBool>) {
    // A connection made during a partition reaches nothing until it heals
    // (on loopback the kernel completes the handshake for us; the
    // gateway's first bytes then vanish, as a lost SYN-ACK's would).
    if !gate(cut, stop) {
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        // The server is down: as it would, refuse (close) the client.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (cut2, stop2) = (cut.clone(), stop.clone());
    std::thread::spawn(move || pump(c2, s2, &cut2, &stop2));
    pump(server, client, cut, stop);
}

/// Copies `from` to `to`, holding every chunk at the gate while cut; an
/// end of stream is passed on (once healed) as a half-close.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, stop: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        if !gate(cut, stop) {
            return;
        }
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Read);
            return;
        }
    }
}
