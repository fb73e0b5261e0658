//! Password hashing: Argon2id for every new hash, bcrypt only to verify
//! hashes imported from passlib / FastAPI apps, which are replaced at the
//! user's next successful login.
//!
//! Hashing costs ~20 MiB and tens of milliseconds of one core, on purpose.
//! So it runs on a pool of its own `parallel` threads, which on Linux lower
//! their priority to nice 19: a flood of logins queues there and uses idle
//! cores, but the scheduler hands the CPU to the threads that proxy
//! everything else whenever both want it. (On tokio's blocking pool the
//! hashes ran at the workers' priority and took every core from them.)

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use portcullis_core::Secret;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use tokio::sync::oneshot;

/// Longest password accepted, in characters (Unicode scalar values, as
/// the length limits of the admin API's document count them). Far above
/// any passphrase (ASVS asks that 64 characters work), and refused before
/// hashing so a megabyte "password" costs nothing.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// A UTF-8 character is at most 4 bytes, so a longer string has more than
/// [`MAX_PASSWORD_CHARS`] characters: refused without counting them.
const MAX_PASSWORD_BYTES: usize = 4 * MAX_PASSWORD_CHARS;

/// Shortest password `users add` / `passwd` accept (ASVS 5.0 6.2.1).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// bcrypt reads only 72 bytes; a longer password would be checked against
/// its prefix, so it is refused instead (ASVS 5.0 6.2.8: no truncation).
const BCRYPT_MAX_BYTES: usize = 72;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Longer than [`MAX_PASSWORD_CHARS`].
    #[error("password longer than {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password shorter than {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// The stored hash is of no algorithm we verify.
    #[error("unsupported password hash (expected $argon2id$ or bcrypt $2a$/$2b$/$2y$)")]
    UnsupportedHash,
    /// The hashing task failed.
    #[error("password hashing failed")]
    Hashing,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The password matches.
    pub ok: bool,
    /// The hash should be replaced (bcrypt, or weaker Argon2 parameters).
    pub needs_rehash: bool,
}

/// Name of the hashing threads (at most 15 bytes: Linux truncates longer
/// thread names).
const THREAD_NAME: &str = "portcullis-hash";

/// The nice value the hashing threads run at: the lowest priority.
#[cfg(target_os = "linux")]
const HASH_NICE: i32 = 19;

/// A hash or check, sent to the pool; it reports through its own channel.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// Hashes and verifies passwords on a bounded pool.
#[derive(Clone)]
pub struct Passwords {
    // Shared by every clone: when the last one drops, the sender drops,
    // the threads' `recv` fails, and they exit.
    pool: Arc<Pool>,
    params: Params,
    // Checked against when the user does not exist, so an unknown name
    // costs the same time as a wrong password.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("threads", &self.pool.threads)
            .finish_non_exhaustive()
    }
}

/// The hashing threads' queue.
struct Pool {
    jobs: mpsc::Sender<Job>,
    threads: usize,
}

impl Pool {
    /// Starts `threads` hashing threads; fails only if the OS refuses a
    /// thread (the ones already started exit as the sender drops).
    fn start(threads: usize) -> Result<Pool, PasswordError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        // std's receiver has one owner; the threads take turns at it.
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(THREAD_NAME.to_owned())
                .spawn(move || work(&rx))
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot start a password-hashing thread");
                    PasswordError::Hashing
                })?;
        }
        Ok(Pool { jobs, threads })
    }
}

/// A hashing thread: lowers its priority, then runs jobs until every
/// sender is gone.
fn work(rx: &Mutex<mpsc::Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting for a job, never while one
        // runs (and jobs catch their own panics), so it cannot be poisoned
        // in practice; if it were, the receiver inside is still sound.
        let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match rx.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {
                // Idle: hold no Argon2 memory while waiting.
                release_memory();
                match rx.recv() {
                    Ok(job) => job,
                    Err(mpsc::RecvError) => return,
                }
            }
        };
        drop(rx);
        job();
    }
}

/// Puts the calling thread in the SCHED_IDLE class at nice 19, so a hash
/// only gets a core the request threads leave idle. Nice alone is not
/// enough: the scheduler lets a running nice-19 thread finish its slice
/// (milliseconds) before a woken request thread gets the core, which
/// measured 7× on proxied p99 during a login flood; a SCHED_IDLE thread is
/// preempted at once. It is not starved: it keeps a small share under
/// full load, and every idle core. Failure costs that, not correctness:
/// the pool runs anyway.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        // Once per process, not per thread: every thread fails alike.
        static LOGGED: AtomicBool = AtomicBool::new(false);
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) && !LOGGED.swap(true, Ordering::Relaxed)
        {
            tracing::debug!(
                error = ?e,
                "cannot put the password-hashing threads in SCHED_IDLE; they run at nice 19 instead"
            );
        }
        // On Linux nice is a per-thread attribute and PRIO_PROCESS with a
        // thread id renices that one thread, not the whole process.
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), HASH_NICE)
            && !LOGGED.swap(true, Ordering::Relaxed)
        {
            tracing::debug!(
                error = %e,
                "cannot lower the password-hashing threads' priority; they compete with request threads"
            );
        }
    }
    // Elsewhere PRIO_PROCESS would renice the whole gateway (nice is
    // per-process there), so the threads keep normal priority.
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// The OWASP minimum: m = 19456 KiB, t = 2, p = 1. (`Params::DEFAULT`;
/// the unit of m is KiB.)
pub fn default_params() -> Params {
    Params::default()
}

/// Checks a password's length before anything else touches it.
pub fn check_length(pw: &str, new: bool) -> Result<(), PasswordError> {
    if pw.len() > MAX_PASSWORD_BYTES || pw.chars().count() > MAX_PASSWORD_CHARS {
        return Err(PasswordError::TooLong);
    }
    if new && pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// Whether a stored hash is one we can verify: an Argon2id PHC string or
/// a bcrypt modular-crypt hash. Used to check imports before they land.
pub fn is_supported_hash(h: &str) -> bool {
    if h.starts_with("$argon2id$") {
        PasswordHash::new(h).is_ok()
    } else if h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$") {
        h.len() == 60
    } else {
        false
    }
}

fn hash_blocking(params: &Params, pw: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hashing)
}

fn verify_blocking(params: &Params, stored: &str, pw: &str) -> Result<Checked, PasswordError> {
    if stored.starts_with("$2") {
        if pw.len() > BCRYPT_MAX_BYTES {
            return Ok(Checked {
                ok: false,
                needs_rehash: false,
            });
        }
        let ok = bcrypt::verify(pw, stored).map_err(|_| PasswordError::UnsupportedHash)?;
        return Ok(Checked {
            ok,
            needs_rehash: true,
        });
    }
    let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::UnsupportedHash)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(PasswordError::UnsupportedHash);
    }
    let ok = verify_argon2id(&parsed, pw.as_bytes())?;
    let weaker = Params::try_from(&parsed)
        .is_ok_and(|p| p.m_cost() < params.m_cost() || p.t_cost() < params.t_cost());
    Ok(Checked {
        ok,
        needs_rehash: ok && weaker,
    })
}

thread_local! {
    // A hashing thread's Argon2 memory (m_cost KiB), reused from one
    // verification to the next while jobs keep coming, and given back when
    // the queue is empty. Allocating it per hash faulted in ~19 MiB of
    // fresh pages each time: `perf stat -e page-faults` counted 503,177
    // in 3 s of a login flood (36 with reuse). That is kernel work in this
    // process, and each munmap's TLB shootdown also interrupts the request
    // threads.
    static MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Argon2id verification of `pw` against a parsed PHC string, with the
/// hash's own parameters, in this thread's reused memory; the comparison
/// is constant-time (`Output`'s equality).
fn verify_argon2id(parsed: &PasswordHash<'_>, pw: &[u8]) -> Result<bool, PasswordError> {
    let params = Params::try_from(parsed).map_err(|_| PasswordError::UnsupportedHash)?;
    let version = match parsed.version {
        None => Version::V0x13,
        Some(v) => Version::try_from(v).map_err(|_| PasswordError::UnsupportedHash)?,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(PasswordError::UnsupportedHash);
    };
    let mut salt_buf = [0u8; argon2::password_hash::Salt::MAX_LENGTH];
    let salt = salt
        .decode_b64(&mut salt_buf)
        .map_err(|_| PasswordError::UnsupportedHash)?;
    let mut out = [0u8; argon2::password_hash::Output::MAX_LENGTH];
    let out = out
        .get_mut(..expected.len())
        .ok_or(PasswordError::UnsupportedHash)?;
    let blocks = params.block_count();
    MEMORY.with(|m| {
        let mut m = m.try_borrow_mut().map_err(|_| PasswordError::Hashing)?;
        if m.len() < blocks {
            m.resize(blocks, argon2::Block::default());
        }
        Argon2::new(Algorithm::Argon2id, version, params)
            .hash_password_into_with_memory(pw, salt, out, &mut m[..blocks])
            .map_err(|_| PasswordError::Hashing)
    })?;
    let computed =
        argon2::password_hash::Output::new(out).map_err(|_| PasswordError::UnsupportedHash)?;
    Ok(computed == expected)
}

/// Gives this thread's Argon2 memory back (when its queue is empty).
fn release_memory() {
    MEMORY.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            *m = Vec::new();
        }
    });
}

impl Passwords {
    /// A hasher running at most `parallel` hashes at once, on `parallel`
    /// threads of its own at the lowest priority.
    pub fn new(params: Params, parallel: usize) -> Result<Passwords, PasswordError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|_| PasswordError::Hashing)?;
        let mut text = String::new();
        portcullis_core::base62::encode_fixed(&random, 43, &mut text);
        let dummy = hash_blocking(&params, &text)?;
        Ok(Passwords {
            pool: Arc::new(Pool::start(parallel.max(1))?),
            params,
            dummy: Arc::new(dummy),
        })
    }

    /// Hashes a new password with Argon2id.
    pub async fn hash(&self, pw: &Secret<String>) -> Result<String, PasswordError> {
        check_length(pw.expose(), true)?;
        let params = self.params.clone();
        let pw = pw.clone();
        self.run(move || hash_blocking(&params, pw.expose())).await
    }

    /// Checks a password against a stored hash; `None` checks against a
    /// dummy hash and always fails (unknown users take as long as known
    /// ones).
    pub async fn verify(
        &self,
        stored: Option<&str>,
        pw: &Secret<String>,
    ) -> Result<Checked, PasswordError> {
        let fail = Checked {
            ok: false,
            needs_rehash: false,
        };
        let params = self.params.clone();
        let too_long = check_length(pw.expose(), false).is_err();
        let (stored, known) = match stored {
            Some(s) if !too_long => (s.to_owned(), true),
            _ => (self.dummy.as_ref().clone(), false),
        };
        // An over-long password still pays for one dummy check, so its
        // answer takes as long as any other failure.
        let pw = if too_long {
            Secret::new(String::new())
        } else {
            pw.clone()
        };
        let r = self
            .run(move || verify_blocking(&params, &stored, pw.expose()))
            .await?;
        Ok(if known { r } else { fail })
    }

    /// Runs `f` on the hashing pool; jobs queue in order while every
    /// thread is busy.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller gave up while the job queued (the client went
            // away): nobody waits for the answer, so spend no CPU on it.
            if tx.is_closed() {
                return;
            }
            // A panic fails this one call, not the thread serving the
            // queue.
            let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
                tracing::error!("password hashing panicked");
                Err(PasswordError::Hashing)
            });
            // Err only if the caller stopped waiting meanwhile.
            let _ = tx.send(r);
        });
        self.pool
            .jobs
            .send(job)
            .map_err(|_| PasswordError::Hashing)?;
        // A dropped sender means the job was lost (it cannot be, short of
        // a panic escaping `catch_unwind`): fail rather than hang.
        rx.await.map_err(|_| PasswordError::Hashing)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: the tests exercise the pool, not Argon2's cost.
    fn params() -> Params {
        Params::new(1024, 1, 1, None).unwrap()
    }

    fn secret(s: &str) -> Secret<String> {
        Secret::new(s.to_owned())
    }

    #[tokio::test]
    async fn hash_and_verify_through_the_pool() {
        let p = Passwords::new(params(), 2).unwrap();
        let stored = p.hash(&secret("correct horse battery")).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));

        // Four times as many checks as threads: they queue, and all finish.
        let pw = secret("correct horse battery");
        let checks = (0..8).map(|_| p.verify(Some(&stored), &pw));
        let results = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            futures_util::future::join_all(checks),
        )
        .await
        .expect("verifications hang");
        for r in results {
            assert_eq!(
                r.unwrap(),
                Checked {
                    ok: true,
                    needs_rehash: false
                }
            );
        }

        let wrong = p.verify(Some(&stored), &secret("wrong")).await.unwrap();
        assert!(!wrong.ok);
        let unknown = p.verify(None, &pw).await.unwrap();
        assert!(!unknown.ok);
        let long = secret(&"x".repeat(MAX_PASSWORD_CHARS + 1));
        assert!(!p.verify(Some(&stored), &long).await.unwrap().ok);
        assert!(matches!(p.hash(&long).await, Err(PasswordError::TooLong)));
    }

    #[tokio::test]
    async fn a_panicking_job_fails_that_call_only() {
        let p = Passwords::new(params(), 1).unwrap();
        let r: Result<(), _> = p.run(|| panic!("test panic in a hashing job")).await;
        assert!(matches!(r, Err(PasswordError::Hashing)));
        // The pool's only thread survived and still serves.
        let stored = p.hash(&secret("correct horse battery")).await.unwrap();
        let pw = secret("correct horse battery");
        assert!(p.verify(Some(&stored), &pw).await.unwrap().ok);
    }

    /// The thread ids of `p`'s `n` pool threads: `n` jobs wait for each
    /// other, so each one holds a different thread. (Tests run in parallel
    /// in one process, so other pools' threads share the name.)
    #[cfg(target_os = "linux")]
    async fn pool_tids(p: &Passwords, n: usize) -> Vec<i32> {
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let jobs = (0..n).map(|_| {
            let b = Arc::clone(&barrier);
            p.run(move || {
                b.wait();
                Ok(rustix::thread::gettid().as_raw_pid())
            })
        });
        let mut tids: Vec<i32> = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            futures_util::future::join_all(jobs),
        )
        .await
        .expect("pool threads do not answer")
        .into_iter()
        .map(Result::unwrap)
        .collect();
        tids.sort_unstable();
        tids.dedup();
        assert_eq!(tids.len(), n, "jobs did not run on {n} distinct threads");
        tids
    }

    /// A thread's name, or `None` once it is gone.
    #[cfg(target_os = "linux")]
    fn comm(tid: i32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
            .ok()
            .map(|s| s.trim_end().to_owned())
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pool_threads_run_at_nice_19() {
        // Some sandboxes refuse setpriority even to lower a priority.
        let allowed = std::thread::spawn(|| {
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASH_NICE)
        })
        .join()
        .unwrap();
        if let Err(e) = allowed {
            // A test that cannot run says so, and fails under CI rather
            // than passing unseen.
            assert!(
                std::env::var_os("CI").is_none(),
                "setpriority is not permitted here ({e}): this test cannot run"
            );
            eprintln!("skipped: setpriority is not permitted here ({e})");
            return;
        }

        let p = Passwords::new(params(), 2).unwrap();
        for tid in pool_tids(&p, 2).await {
            assert_eq!(comm(tid).as_deref(), Some(THREAD_NAME));
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
            // Fields after `comm`, which is in parentheses and may hold
            // spaces, start at field 3 (state); nice is field 19.
            let (_, rest) = stat.rsplit_once(')').unwrap();
            let nice: i32 = rest
                .split_whitespace()
                .nth(19 - 3)
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(nice, HASH_NICE, "thread {tid}: {stat}");
            // The scheduling policy is field 41: 5 is SCHED_IDLE.
            let policy: i32 = rest
                .split_whitespace()
                .nth(41 - 3)
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(policy, 5, "thread {tid} is not SCHED_IDLE: {stat}");
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn dropping_the_last_clone_stops_the_threads() {
        let p = Passwords::new(params(), 2).unwrap();
        let tids = pool_tids(&p, 2).await;
        let clone = p.clone();
        drop(p);
        // A clone keeps the pool alive.
        let stored = clone.hash(&secret("correct horse battery")).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        for &tid in &tids {
            assert_eq!(comm(tid).as_deref(), Some(THREAD_NAME));
        }
        drop(clone);
        // Matching on the thread ids, not a count of the name, leaves
        // other tests' pools out of it. (A recycled id would carry another
        // name, or be a new pool's thread: ids are reused only after the
        // kernel's pid space wraps, far beyond these few seconds.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let alive: Vec<i32> = tids
                .iter()
                .copied()
                .filter(|&t| comm(t).as_deref() == Some(THREAD_NAME))
                .collect();
            if alive.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hashing threads {alive:?} still running after the last Passwords dropped"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
