//! Several gateways on one Postgres store and one Redis (issue 18): a key
//! made on one instance works on the others at first sight; a shared
//! limit admits its allowance across them; a revocation on one reaches
//! the others' caches (measured: time to the first 401, with LISTEN and
//! poll-only); and Postgres stopped, or one instance cut off from it,
//! behaves as declared: cached keys work for `store.stale_grace`, then
//! 503; unknown keys and admin writes get 503 `store_unavailable` without
//! a hang; `/readyz` says so; everything comes back by itself.
//!
//! Only correctness is asserted. Times are printed and written to
//! `target/propagation-*.txt`; the bounds asserted are hang detectors,
//! many times the goal, so a loaded machine passes.
//!
//! These tests start up to three gateways, a Redis and a Postgres each:
//! they take one lock so they never run side by side (which would also
//! spoil the measurement). Run them alone with
//! `cargo test -p portcullis-gateway --test it scale:: -- --test-threads=1 --nocapture`.

use crate::fault_proxy::FaultProxy;
use crate::harness::*;
use crate::pg_server::{PG_PASSWORD, PG_USER, PgServer};
use crate::redis_server::RedisServer;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One scale test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next one may still run.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The routes every instance serves, limits counted in `redis` (with the
/// longest timeout and `deny`: a slow Redis on a loaded machine shows as
/// a 503, never as a silent local count).
fn routes(redis: &RedisServer) -> String {
    format!(
        r#"
[rate_limit]
backend = "{url}"
timeout_ms = 5000
on_backend_error = "deny"

[[routes]]
path = "/data"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]

[[routes]]
path = "/limited"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "100/minute"
rate_limit_by = "route"
"#,
        url = redis.url()
    )
}

/// Three gateways on one store (each through the URL given for it) and
/// one Redis.
struct Cluster {
    envs: Vec<Env>,
    servers: Vec<Server>,
    /// An admin key, made by `init` on instance 1.
    admin: String,
    _redis: RedisServer,
}

impl Cluster {
    /// `urls[i]` is instance i's store URL (the same database, maybe
    /// through a proxy); `store` is added to every `[store]` section.
    fn start(urls: [&str; 3], store: &str) -> Cluster {
        let redis = RedisServer::start();
        let extra = routes(&redis);
        let envs: Vec<Env> = urls
            .iter()
            .map(|u| Env::on_store(u, store, &extra))
            .collect();
        let admin = envs[0].init();
        let servers = envs.iter().map(Env::serve).collect();
        Cluster {
            envs,
            servers,
            admin,
            _redis: redis,
        }
    }

    /// The last lines each instance logged, access lines and refusals
    /// left out, for a failure message.
    fn logs(&self) -> String {
        // What was logged just before the failure is written by the log
        // thread's next batch (every 10 ms).
        std::thread::sleep(Duration::from_millis(300));
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let log = s.log();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .filter(|l| {
                        !l.contains("\"portcullis::access\"") && !l.contains("credential refused")
                    })
                    .take(40)
                    .collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- instance {} ---\n{}\n", i + 1, tail.join("\n"))
            })
            .collect()
    }

    /// Stops every instance and checks that no log line holds the
    /// store's password (connection errors must name the server with
    /// the URL redacted).
    fn stop_and_check_logs(self) {
        for (i, s) in self.servers.into_iter().enumerate() {
            let log = s.stop();
            assert_no_secrets(&log, &[PG_PASSWORD.to_owned()]);
            assert!(!log.is_empty(), "instance {}: no log at all", i + 1);
        }
    }

    /// `POST /admin/v1/keys` on instance `i`: (id, key).
    fn create_key(&self, c: &Client, i: usize, name: &str) -> (String, String) {
        let r = c
            .post(self.envs[i].admin_url("/admin/v1/keys"))
            .header("X-API-Key", &self.admin)
            .json(&json!({"name": name}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "create {name}: {}", r.text().unwrap());
        let v: Value = r.json().unwrap();
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// `POST /admin/v1/keys/{id}/revoke` on instance `i`.
    fn revoke(&self, c: &Client, i: usize, id: &str) {
        let r = c
            .post(self.envs[i].admin_url(&format!("/admin/v1/keys/{id}/revoke")))
            .header("X-API-Key", &self.admin)
            .send()
            .unwrap();
        assert!(
            r.status().is_success(),
            "revoke {id}: {} {}\n{}",
            r.status(),
            r.text().unwrap(),
            self.logs()
        );
    }

    /// `GET /data` with `key` on instance `i`. The client's own timeout
    /// (20 s) is the hang detector.
    fn get(&self, c: &Client, i: usize, key: &str) -> Response {
        c.get(self.envs[i].url("/data"))
            .header("X-API-Key", key)
            .send()
            .unwrap_or_else(|e| panic!("instance {} did not answer: {e}", i + 1))
    }

    fn status(&self, c: &Client, i: usize, key: &str) -> u16 {
        self.get(c, i, key).status().as_u16()
    }

    /// Key lookups instance `i` has sent to the store since it started.
    fn store_lookups(&self, c: &Client, i: usize) -> u64 {
        let v: Value = c
            .get(self.envs[i].admin_url("/admin/v1/stats"))
            .header("X-API-Key", &self.admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["store_key_lookups"].as_u64().unwrap()
    }

    /// Every instance answers `key` with 200 and has it cached: a use
    /// that asks the store nothing. (A first use need not cache it: a
    /// lookup during which the instance applies a change — such as the
    /// creation of the keys just made — answers but keeps nothing.)
    fn use_everywhere(&self, c: &Client, key: &str) {
        for i in 0..3 {
            let cached = within(Duration::from_secs(20), || {
                let before = self.store_lookups(c, i);
                let r = self.get(c, i, key);
                assert_eq!(r.status(), 200, "instance {}: {}", i + 1, r.text().unwrap());
                self.store_lookups(c, i) == before
            });
            assert!(cached.is_some(), "instance {} never cached the key", i + 1);
        }
    }

    /// Waits (up to `limit`) until instance `i` answers `key` with
    /// `want`; the time it took, or a failure naming what it answered.
    fn until(&self, c: &Client, i: usize, key: &str, want: u16, limit: Duration) -> Duration {
        let mut last = 0;
        within(limit, || {
            last = self.status(c, i, key);
            last == want
        })
        .unwrap_or_else(|| {
            panic!(
                "instance {} still answers {last}, not {want}, after {limit:?}\n{}",
                i + 1,
                self.logs()
            )
        })
    }
}

/// Ends background load when a test body ends, even by a panic (else the
/// scope would wait for the load threads for ever).
struct EndLoad<'a>(&'a AtomicBool);

impl Drop for EndLoad<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A refusal because the store cannot be reached: 503, problem+json,
/// `store_unavailable`.
fn assert_store_unavailable(r: Response, what: &str) {
    assert_eq!(r.status(), 503, "{what}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/problem+json"), "{what}: {ct}");
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "store_unavailable", "{what}: {body}");
}

/// A URL for `db` on the same cluster as `url` but through `port`.
fn via_port(url: &str, port: u16) -> String {
    let db = url.rsplit('/').next().unwrap();
    format!("postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{db}")
}

/// Where cargo puts build output (`target/`, or `CARGO_TARGET_DIR`): two
/// levels above the binary under test.
fn target_dir() -> std::path::PathBuf {
    std::path::Path::new(BIN)
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf()
}

// ---------------------------------------------------------------------

#[test]
fn a_key_made_on_one_instance_works_on_the_others_at_first_sight() {
    let _one = serial();
    let url = PgServer::shared().fresh_db();
    let cl = Cluster::start([&url, &url, &url], "");
    let c = client();
    let (_, key) = cl.create_key(&c, 0, "first-sight");
    // Instances 2 and 3 have never seen it: both at once, first try.
    let (a, b) = std::thread::scope(|s| {
        let h2 = s.spawn(|| cl.status(&client(), 1, &key));
        let h3 = s.spawn(|| cl.status(&client(), 2, &key));
        (h2.join().unwrap(), h3.join().unwrap())
    });
    assert_eq!((a, b), (200, 200), "{}", cl.logs());
    assert_eq!(cl.status(&c, 0, &key), 200);
    cl.stop_and_check_logs();
}

#[test]
fn a_shared_limit_admits_its_allowance_across_three_instances() {
    let _one = serial();
    let url = PgServer::shared().fresh_db();
    let cl = Cluster::start([&url, &url, &url], "");
    let (_, key) = cl.create_key(&client(), 0, "limited");
    const THREADS: usize = 12;
    const EACH: usize = 25;
    let barrier = std::sync::Barrier::new(THREADS + 1);
    let (answers, elapsed) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cl, key, barrier) = (&cl, &key, &barrier);
                s.spawn(move || {
                    let c = client();
                    // Connections to all three open (and the key cached)
                    // before the start, on the unlimited route.
                    for i in 0..3 {
                        assert_eq!(cl.status(&c, i, key), 200);
                    }
                    barrier.wait();
                    (0..EACH)
                        .map(|j| {
                            let r = c
                                .get(cl.envs[(t + j) % 3].url("/limited"))
                                .header("X-API-Key", key)
                                .send()
                                .unwrap();
                            let ra = r
                                .headers()
                                .get("retry-after")
                                .map(|v| v.to_str().unwrap().to_owned());
                            (r.status().as_u16(), ra)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let answers: Vec<(u16, Option<String>)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (answers, start.elapsed())
    });
    let admitted = answers.iter().filter(|(s, _)| *s == 200).count();
    for (status, ra) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 429, "{answers:?}");
        let ra: u64 = ra
            .as_deref()
            .expect("429 without Retry-After")
            .parse()
            .unwrap();
        assert!(ra >= 1, "Retry-After {ra}");
    }
    eprintln!(
        "100/minute across 3 instances: {admitted} of {} admitted in {elapsed:?}",
        answers.len()
    );
    // GCRA: 100 at once from idle, then one more every 0.6 s. A load
    // that ends within 0.6 s is admitted exactly 100; a slower machine
    // may see the refill, never more.
    let refill = (elapsed.as_millis() / 600) as usize;
    assert!(
        (100..=100 + refill).contains(&admitted),
        "{admitted} admitted in {elapsed:?} (at most {} allowed)",
        100 + refill
    );
    cl.stop_and_check_logs();
}

/// p50, p99 and max of sorted, non-empty `v` (nearest rank).
fn percentiles(v: &[Duration]) -> (Duration, Duration, Duration) {
    let n = v.len();
    let at = |q: usize| v[(n * q).div_ceil(100).max(1) - 1];
    (at(50), at(99), v[n - 1])
}

/// Revokes ≥ 50 keys on instance 1, each cached on all three first, and
/// measures for instances 2 and 3 the time from the revoke call's answer
/// to the first 401; with `load`, while one client per instance sends
/// requests with another key as fast as they are answered. Returns (p50,
/// p99, max) and writes them to `target/propagation-{label}.txt`.
fn propagation(store: &str, label: &str, load: bool) -> (Duration, Duration, Duration) {
    let url = PgServer::shared().fresh_db();
    // Long store timeouts: this measures propagation, not outages, and on
    // a loaded 2-core machine a fresh connection (SCRAM, in a debug
    // build) or a statement can take seconds; with the defaults (2 s to
    // get a connection) a lookup would be refused with 503.
    let cl = Cluster::start(
        [&url, &url, &url],
        &format!("{store}\nconnect_timeout = \"10s\"\nstatement_timeout = \"10s\""),
    );
    let c = client();
    const KEYS: usize = 60;
    let keys: Vec<(String, String)> = (0..KEYS)
        .map(|n| cl.create_key(&c, 0, &format!("k{n}")))
        .collect();
    let (_, busy) = cl.create_key(&c, 0, "busy");
    // One client per instance, kept alive across polls.
    let pollers = [client(), client(), client()];
    // Every key cached everywhere, so what is measured is the caches'
    // invalidation: rounds of uses until one asks no store anything.
    for (i, p) in pollers.iter().enumerate() {
        let settled = within(Duration::from_secs(30), || {
            let before = cl.store_lookups(&c, i);
            for (_, key) in &keys {
                assert_eq!(cl.status(p, i, key), 200, "{}", cl.logs());
            }
            cl.store_lookups(&c, i) == before
        });
        assert!(
            settled.is_some(),
            "instance {}: the keys never stayed cached",
            i + 1
        );
    }
    let limit = Duration::from_secs(5);
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let started = Instant::now();
    let (mut samples, mut lowers) = std::thread::scope(|s| {
        let end_load = EndLoad(&stop);
        for i in (0..3).filter(|_| load) {
            let (cl, busy, stop, served) = (&cl, &busy, &stop, &served);
            s.spawn(move || {
                let c = client();
                while !stop.load(Ordering::SeqCst) {
                    assert_eq!(cl.status(&c, i, busy), 200, "load on instance {}", i + 1);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let (mut samples, mut lowers) = (Vec::new(), Vec::new());
        for (n, (id, key)) in keys.iter().enumerate() {
            // Each revocation at another point of the instances' poll
            // interval (250 ms): without this the loop locks onto their
            // ticks (each one starts just after a poll was seen), which
            // biases poll-only times.
            std::thread::sleep(Duration::from_millis((n as u64 * 7919) % 251));
            cl.revoke(&c, 0, id);
            let start = Instant::now();
            // Per instance: (when the first 401 arrived, when the last
            // request answered 200 was sent), or None past the limit. The
            // instance learned of the revocation between the two: after
            // it decided that 200, before it decided the 401.
            let times: Vec<Option<(Duration, Duration)>> = std::thread::scope(|s| {
                let hs: Vec<_> = (1..3)
                    .map(|i| {
                        let (cl, p, key) = (&cl, &pollers[i], key);
                        s.spawn(move || {
                            let mut last_200_sent = Duration::ZERO;
                            loop {
                                let sent = start.elapsed();
                                let r = cl.get(p, i, key);
                                let st = r.status().as_u16();
                                if st == 401 {
                                    return Some((start.elapsed(), last_200_sent));
                                }
                                assert_eq!(
                                    st,
                                    200,
                                    "instance {}: neither 200 nor 401: {}\n{}",
                                    i + 1,
                                    r.text().unwrap(),
                                    cl.logs()
                                );
                                last_200_sent = sent;
                                if start.elapsed() > limit {
                                    return None;
                                }
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (i, t) in times.into_iter().enumerate() {
                let t = t.unwrap_or_else(|| {
                    panic!(
                        "{label}: instance {} still admits revoked key {id} after {limit:?}\n{}",
                        i + 2,
                        cl.logs()
                    )
                });
                samples.push(t.0);
                lowers.push(t.1);
            }
            // Instance 1 refused it at once (its own admin API).
            assert_eq!(cl.status(&c, 0, key), 401);
        }
        drop(end_load);
        (samples, lowers)
    });
    let load_note = if load {
        format!(
            ", under load ({:.0} requests/s on the three, besides the polls)",
            served.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
        )
    } else {
        String::new()
    };
    samples.sort_unstable();
    lowers.sort_unstable();
    let n = samples.len();
    let (p50, p99, max) = percentiles(&samples);
    let (l50, l99, lmax) = percentiles(&lowers);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let line = format!(
        "revocation propagation ({label}), 3 instances, {KEYS} revocations, {n} samples \
         (time from the revoke's answer on instance 1 to the first 401 on instances 2 and 3)\
         {load_note}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (an upper bound; the lower bound, \
         when the last request answered 200 was sent: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
        ms(p50),
        ms(p99),
        ms(max),
        ms(l50),
        ms(l99),
        ms(lmax)
    );
    eprintln!("{line}");
    let list = |v: &[Duration]| -> String {
        v.iter()
            .map(|d| format!("{:.3}", ms(*d)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let file = target_dir().join(format!("propagation-{label}.txt"));
    std::fs::write(
        &file,
        format!(
            "{line}\nsamples_ms {}\nlower_bounds_ms {}\n",
            list(&samples),
            list(&lowers)
        ),
    )
    .unwrap();
    eprintln!("written to {}", file.display());
    cl.stop_and_check_logs();
    (p50, p99, max)
}

#[test]
fn revocation_reaches_every_instance_with_listen() {
    let _one = serial();
    propagation("", "listen", false);
}

#[test]
fn revocation_reaches_every_instance_with_listen_under_load() {
    let _one = serial();
    propagation("", "listen-loaded", true);
}

#[test]
fn revocation_reaches_every_instance_polling_only() {
    let _one = serial();
    propagation("listen = \"off\"", "poll-only", false);
}

#[test]
fn postgres_stopped_under_load_then_back() {
    let _one = serial();
    let mut pg = PgServer::start();
    let url = pg.fresh_db();
    let grace = Duration::from_secs(3);
    // The default store timeouts (a stopped server refuses connections
    // at once; they matter for the partition below).
    let cl = Cluster::start([&url, &url, &url], "stale_grace = \"3s\"");
    let c = client();
    let (id_a, cached) = cl.create_key(&c, 0, "cached");
    let (_, other) = cl.create_key(&c, 0, "other");
    // Made, but never used: no instance has it cached.
    let (_, unseen) = cl.create_key(&c, 0, "unseen");
    cl.use_everywhere(&c, &cached);
    cl.use_everywhere(&c, &other);

    // Load on every instance all along: a valid key may be answered 200
    // or 503, never 401 (the store being down says nothing about the
    // key), never anything else, and never after a hang.
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        let end_load = EndLoad(&stop);
        let load = s.spawn(|| {
            let c = client();
            let mut seen = std::collections::BTreeMap::<u16, usize>::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let st = cl.status(&c, n % 3, &other);
                assert!(
                    st == 200 || st == 503,
                    "a valid key answered {st} by instance {}",
                    n % 3 + 1
                );
                *seen.entry(st).or_default() += 1;
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });

        // The last moment every instance could have read the store.
        let stopped_at = Instant::now();
        pg.stop();
        let stop_took = stopped_at.elapsed();

        // Inside the grace: cached keys still work. Asserted only while
        // the clock says we are inside it (a slow `stop` on a loaded
        // machine may eat it).
        for i in 0..3 {
            let r = cl.get(&c, i, &cached);
            let at = stopped_at.elapsed();
            if at + Duration::from_millis(500) < grace {
                let st = r.status().as_u16();
                assert_eq!(
                    st,
                    200,
                    "instance {}: cached key inside the grace ({at:?} after the stop began): {}\n{}",
                    i + 1,
                    r.text().unwrap(),
                    cl.logs()
                );
            } else {
                eprintln!("grace already over ({stop_took:?} to stop Postgres): not checked");
            }
        }
        // An unknown key: 503 store_unavailable, at once (a hang check).
        for i in 0..3 {
            let t = Instant::now();
            let r = cl.get(&c, i, &unseen);
            let took = t.elapsed();
            assert_store_unavailable(r, &format!("instance {}: unseen key", i + 1));
            eprintln!(
                "Postgres stopped: instance {}, unseen key: 503 in {took:?}",
                i + 1
            );
            assert!(
                took < Duration::from_secs(5),
                "instance {}: {took:?}",
                i + 1
            );
        }
        // An admin write: 503 problem+json.
        let t = Instant::now();
        let r = c
            .post(cl.envs[1].admin_url("/admin/v1/keys"))
            .header("X-API-Key", &cl.admin)
            .json(&json!({"name": "during-outage"}))
            .send()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "admin write hung");
        assert_eq!(r.status(), 503, "admin write");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/problem+json"), "{ct}");
        eprintln!("admin write during the outage: {}", r.text().unwrap());
        // Not ready.
        for i in 0..3 {
            let r = c.get(cl.envs[i].url("/readyz")).send().unwrap();
            assert_store_unavailable(r, &format!("instance {}: /readyz", i + 1));
        }
        // The grace over: even cached keys get 503 (a revocation could
        // have happened that this instance cannot know about).
        for i in 0..3 {
            cl.until(&c, i, &cached, 503, Duration::from_secs(30));
            assert_store_unavailable(
                cl.get(&c, i, &cached),
                &format!("instance {}: cached key after the grace", i + 1),
            );
        }

        // Back, on the same port: each instance recovers by itself.
        pg.start_again();
        let back = Instant::now();
        for i in 0..3 {
            cl.until(&c, i, &cached, 200, Duration::from_secs(30));
            eprintln!(
                "Postgres back: instance {} admits the cached key again {:?} after it took connections",
                i + 1,
                back.elapsed()
            );
            cl.until(&c, i, &unseen, 200, Duration::from_secs(30));
            let ready = within(Duration::from_secs(30), || {
                c.get(cl.envs[i].url("/readyz")).send().unwrap().status() == 200
            });
            assert!(
                ready.is_some(),
                "instance {}: /readyz\n{}",
                i + 1,
                cl.logs()
            );
        }
        // Admin writes work again (retried: the first may still find
        // the pool's breaker open).
        let made = within(Duration::from_secs(30), || {
            c.post(cl.envs[1].admin_url("/admin/v1/keys"))
                .header("X-API-Key", &cl.admin)
                .json(&json!({"name": "after-outage"}))
                .send()
                .unwrap()
                .status()
                == 201
        });
        assert!(
            made.is_some(),
            "no admin write after recovery\n{}",
            cl.logs()
        );

        drop(end_load);
        load.join().unwrap()
    });
    eprintln!("statuses of a valid key under load through the outage: {seen:?}");

    // A change right after recovery reaches every instance.
    cl.revoke(&c, 0, &id_a);
    for i in 1..3 {
        cl.until(&c, i, &cached, 401, Duration::from_secs(5));
    }
    cl.stop_and_check_logs();
}

#[test]
fn an_instance_cut_off_from_postgres_ages_out_then_catches_up() {
    let _one = serial();
    let pg = PgServer::shared();
    let url = pg.fresh_db();
    let proxy = FaultProxy::start(([127, 0, 0, 1], pg.port()).into());
    let cut_url = via_port(&url, proxy.port());
    let grace = Duration::from_secs(3);
    // A partition is noticed only when a query times out: shorter store
    // timeouts than the defaults (2 s + 5 s), not so short that a loaded
    // machine trips them.
    let cl = Cluster::start(
        [&url, &url, &cut_url],
        "stale_grace = \"3s\"\nconnect_timeout = \"2s\"\nstatement_timeout = \"2s\"",
    );
    let c = client();
    let (id_r, revoked) = cl.create_key(&c, 0, "to-revoke");
    let (_, kept) = cl.create_key(&c, 0, "kept");
    let (_, unseen) = cl.create_key(&c, 0, "unseen");
    cl.use_everywhere(&c, &revoked);
    cl.use_everywhere(&c, &kept);

    proxy.cut();
    let cut_at = Instant::now();
    // Revoked through instance 1 while instance 3 cannot hear of it.
    cl.revoke(&c, 0, &id_r);
    assert_eq!(cl.status(&c, 0, &revoked), 401);
    cl.until(&c, 1, &revoked, 401, Duration::from_secs(5));

    // Instance 3: the revoked key passes only while its last good read
    // is within the grace, then 503 — never 401 (it cannot know), and,
    // once 503, never 200 again while cut off.
    let mut became_503 = None;
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let st = cl.status(&c, 2, &revoked);
        match (st, became_503) {
            (200, None) => {}
            (503, None) => became_503 = Some(cut_at.elapsed()),
            (_, Some(_)) => after.push(st),
            (other, None) => panic!("instance 3, cut off, answered {other}\n{}", cl.logs()),
        }
        if after.len() >= 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let aged = became_503.unwrap_or_else(|| panic!("instance 3 never aged out\n{}", cl.logs()));
    assert!(
        after.iter().all(|&s| s == 503),
        "after aging out: {after:?}"
    );
    eprintln!(
        "instance 3, cut off: the revoked key answered 200 for {aged:?} after the cut, then 503 \
         (stale_grace {grace:?})"
    );
    // Everything else it knows has aged out too; an unseen key is 503
    // without a hang.
    assert_store_unavailable(cl.get(&c, 2, &kept), "instance 3: kept key, cut off");
    let t = Instant::now();
    assert_store_unavailable(cl.get(&c, 2, &unseen), "instance 3: unseen key, cut off");
    eprintln!("cut off: instance 3, unseen key: 503 in {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "unseen key: {:?}",
        t.elapsed()
    );
    assert_store_unavailable(
        c.get(cl.envs[2].url("/readyz")).send().unwrap(),
        "instance 3: /readyz, cut off",
    );
    // The others never noticed.
    for i in 0..2 {
        assert_eq!(cl.status(&c, i, &kept), 200);
    }

    // Heal: instance 3 catches up with what it missed.
    proxy.heal();
    let took = cl.until(&c, 2, &kept, 200, Duration::from_secs(30));
    eprintln!("healed: instance 3 admits again after {took:?}");
    assert_eq!(
        cl.status(&c, 2, &revoked),
        401,
        "the revocation made during the cut"
    );
    assert_eq!(cl.status(&c, 2, &unseen), 200);
    assert!(proxy.accepted.load(Ordering::SeqCst) > 0);
    cl.stop_and_check_logs();
}
