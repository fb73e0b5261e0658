//! Where log lines go: appended to a buffer in memory under a short lock,
//! and written to stdout in batches by one thread, every few milliseconds
//! or as soon as a batch is large.
//!
//! Why not one `write` per line: at tens of thousands of requests a
//! second, a syscall and a thread wake-up per access-log line cost more
//! CPU than the rest of the request's own work (measured with
//! `bench/side-by-side`; a channel-based writer spent most of it waking
//! and spinning). A request never waits on stdout unless the writer is a
//! whole `MAX_PENDING` behind, and then it waits rather than drop a line:
//! the access log is an audit record.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in memory before it is written.
const INTERVAL: Duration = Duration::from_millis(10);
/// A batch this large is written at once, without waiting for the timer.
const EAGER: usize = 256 * 1024;
/// Past this, writers wait for the writer thread (backpressure, not loss).
const MAX_PENDING: usize = 16 * 1024 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    // Signalled when a batch is ready early, and when the writer has
    // drained the buffer (for writers waiting on backpressure).
    ready: Condvar,
    drained: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A writer that panicked mid-append leaves at worst a partial
        // line; the log goes on.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` handed to the subscriber.
#[derive(Clone)]
pub struct BatchLog {
    shared: Arc<Shared>,
}

impl BatchLog {
    /// Appends whole lines (what [`Append`] does for the subscriber).
    pub fn append(&self, lines: &[u8]) {
        let _ = Append {
            shared: &self.shared,
        }
        .write(lines);
    }
}

/// Keeps the writer thread; dropping it writes what is pending and stops it.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A batching writer to `out`, and the guard that flushes it.
pub fn batch_log<W: Write + Send + 'static>(out: W) -> std::io::Result<(BatchLog, Flusher)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::with_capacity(EAGER)),
        ready: Condvar::new(),
        drained: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("portcullis-log".into())
        .spawn(move || run(&s, out))?;
    Ok((
        BatchLog {
            shared: shared.clone(),
        },
        Flusher {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run<W: Write>(s: &Shared, mut out: W) {
    let mut spare = Vec::with_capacity(EAGER);
    loop {
        let stopping = {
            let mut g = s.lock();
            if g.len() < EAGER && !s.stop.load(Ordering::Acquire) {
                g = s
                    .ready
                    .wait_timeout(g, INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut *g, &mut spare);
            s.stop.load(Ordering::Acquire)
        };
        s.drained.notify_all();
        if !spare.is_empty() {
            // A failed write (stdout closed) loses this batch: there is
            // nowhere else to put it, and keeping it would grow forever.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            if spare.capacity() > 4 * EAGER {
                spare.shrink_to(EAGER);
            }
        }
        if stopping && s.lock().is_empty() {
            return;
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One event's writer: the subscriber formats a whole line, then writes it
/// with one `write_all`, so a line is appended under one lock.
pub struct Append<'a> {
    shared: &'a Shared,
}

impl Write for Append<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = self.shared;
        let mut g = s.lock();
        while g.len() >= MAX_PENDING && !s.stop.load(Ordering::Acquire) {
            s.ready.notify_one();
            g = s.drained.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
        g.extend_from_slice(buf);
        if g.len() >= EAGER {
            s.ready.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchLog {
    type Writer = Append<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Append {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A `Write` into shared memory, to read what the thread wrote.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_arrives_whole_and_the_guard_flushes() {
        let sink = Sink::default();
        let (log, flusher) = batch_log(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("thread {t} line {i} {}\n", "x".repeat(i % 300));
                        log.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flusher);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 80_000);
        for t in 0..4 {
            let mine: Vec<&str> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .copied()
                .collect();
            assert_eq!(mine.len(), 20_000);
            for (i, l) in mine.iter().enumerate() {
                // In order per thread, and never torn.
                assert_eq!(*l, format!("thread {t} line {i} {}", "x".repeat(i % 300)));
            }
        }
    }

    #[test]
    fn a_line_is_written_without_waiting_for_shutdown() {
        let sink = Sink::default();
        let (log, _flusher) = batch_log(sink.clone()).unwrap();
        log.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
    }
}
