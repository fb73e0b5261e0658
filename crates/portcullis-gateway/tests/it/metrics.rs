//! Prometheus metrics (docs/metrics.md): exact counters after known
//! traffic, the exposition linted by `promtool check metrics`, a real
//! Debian `prometheus` server scraping the gateway with a bearer key from
//! a file and answering queries about it, who may read `/metrics`, and no
//! credential anywhere in what it shows.
//!
//! Needs /usr/bin/prometheus and /usr/bin/promtool (Debian `prometheus`;
//! scripts/install-test-deps.sh installs it). Like nginx, they are
//! required: without them these tests fail, saying how to install them.

use crate::harness::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

const CFG: &str = r#"
[[routes]]
path = "/data"
methods = ["GET", "POST"]
upstream = "demo"
auth = ["api_key_header", "bearer"]
scopes = ["data:read"]

[[routes]]
path = "/items/**"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
rate_limit = "1/minute"
"#;

fn tool(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} missing: run scripts/install-test-deps.sh (Debian package prometheus, which ships promtool)"
    );
    p
}

/// One sample line of the text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((n, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                // Our label values hold no quote, comma or backslash.
                for kv in rest.split("\",").filter(|s| !s.is_empty()) {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (n.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the one series `name{labels}` (labels as `k=v` pairs,
/// exactly the series' labels); `None` when there is no such series.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?} appears twice");
    found.first().map(|s| s.value)
}

fn outcome(samples: &[Sample], route: &str, scheme: &str, outcome: &str) -> Option<f64> {
    value(
        samples,
        "portcullis_admission_decisions_total",
        &[
            ("route", route),
            ("entrance", "proxy"),
            ("scheme", scheme),
            ("outcome", outcome),
        ],
    )
}

fn requests(samples: &[Sample], route: &str, method: &str, status: &str) -> Option<f64> {
    value(
        samples,
        "portcullis_http_requests_total",
        &[("route", route), ("method", method), ("status", status)],
    )
}

/// `GET /metrics` on the admin listener with `key` as a bearer token.
fn scrape(env: &Env, key: &str) -> String {
    let r = client()
        .get(env.admin_url("/metrics"))
        .bearer_auth(key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    r.text().unwrap()
}

fn key_json(env: &Env, args: &[&str]) -> (String, String) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&env.create_key(&a)).unwrap();
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().to_owned(),
    )
}

fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut c = Command::new(tool(PROMTOOL))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn counts_every_outcome_exactly_and_shows_no_credential() {
    let env = Env::new(CFG);
    let admin = env.init();
    let (scraper, _) = key_json(&env, &["--name", "prom", "--scopes", "metrics"]);
    let (good, good_id) = key_json(&env, &["--name", "good", "--scopes", "data:read"]);
    let (weak, weak_id) = key_json(&env, &["--name", "weak", "--scopes", "other"]);
    let (gone, gone_id) = key_json(&env, &["--name", "gone", "--scopes", "data:read"]);
    assert!(env.cli(&["keys", "revoke", &gone_id]).status.success());
    let s = env.serve();
    let c = client();
    let get = |path: &str, key: Option<&str>| {
        let mut r = c.get(env.url(path));
        if let Some(k) = key {
            r = r.header("x-api-key", k);
        }
        r.send().unwrap().status().as_u16()
    };
    for _ in 0..3 {
        assert_eq!(get("/data", Some(&good)), 200);
    }
    let r = c.post(env.url("/data")).bearer_auth(&good).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get("/data", None), 401);
    assert_eq!(get("/data", Some(&gone)), 401);
    assert_eq!(get("/data", Some(&weak)), 403);
    // A checksum that does not match: malformed, never looked up.
    let mut bad = good.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(get("/data", Some(&bad)), 401);
    // The route's pattern is the label, whatever the path.
    assert_eq!(get("/items/a/b", Some(&good)), 200);
    assert_eq!(get("/items/c", Some(&good)), 429);
    assert_eq!(get("/nowhere", None), 404);
    assert_eq!(get("/healthz", None), 200);
    // The decision endpoint: its own request label, and the decision
    // counted under the route it decided about.
    let r = c
        .get(env.url("/auth/verify"))
        .header("x-original-uri", "/data")
        .header("x-original-method", "GET")
        .header("x-api-key", &good)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let text = scrape(&env, &scraper);
    let m = parse(&text);
    let h = "api_key_header";
    assert_eq!(outcome(&m, "/data", h, "valid"), Some(3.0), "{text}");
    assert_eq!(outcome(&m, "/data", "bearer", "valid"), Some(1.0));
    assert_eq!(outcome(&m, "/data", "none", "missing"), Some(1.0));
    assert_eq!(outcome(&m, "/data", h, "revoked"), Some(1.0));
    assert_eq!(outcome(&m, "/data", h, "insufficient_scope"), Some(1.0));
    assert_eq!(outcome(&m, "/data", h, "malformed"), Some(1.0));
    assert_eq!(outcome(&m, "/items/**", h, "valid"), Some(1.0));
    assert_eq!(outcome(&m, "/items/**", h, "rate_limited"), Some(1.0));
    assert_eq!(outcome(&m, "/data", h, "rate_limited"), None);
    assert_eq!(
        value(
            &m,
            "portcullis_admission_decisions_total",
            &[
                ("route", "/data"),
                ("entrance", "decision"),
                ("scheme", h),
                ("outcome", "valid"),
            ],
        ),
        Some(1.0)
    );
    assert_eq!(requests(&m, "/auth/verify", "GET", "200"), Some(1.0));
    let decisions: f64 = m
        .iter()
        .filter(|s| s.name == "portcullis_admission_decisions_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(decisions, 11.0);

    assert_eq!(requests(&m, "/data", "GET", "200"), Some(3.0));
    assert_eq!(requests(&m, "/data", "POST", "200"), Some(1.0));
    assert_eq!(requests(&m, "/data", "GET", "401"), Some(3.0));
    assert_eq!(requests(&m, "/data", "GET", "403"), Some(1.0));
    assert_eq!(requests(&m, "/items/**", "GET", "200"), Some(1.0));
    assert_eq!(requests(&m, "/items/**", "GET", "429"), Some(1.0));
    assert_eq!(requests(&m, "none", "GET", "404"), Some(1.0));
    assert_eq!(requests(&m, "/healthz", "GET", "200"), Some(1.0));
    assert!(!text.contains("/items/a/b") && !text.contains("/nowhere"));
    let count = |route: &str| {
        value(
            &m,
            "portcullis_http_request_duration_seconds_count",
            &[("route", route)],
        )
    };
    assert_eq!(count("/data"), Some(8.0));
    assert_eq!(count("/items/**"), Some(2.0));
    // The demo upstream is no HTTP upstream: no upstream times.
    assert!(!text.contains("portcullis_upstream_duration_seconds"));

    // Caches: the first sight of each of the four known keys (good, weak,
    // gone, and the scraper's, checked by the same verifier) misses both
    // caches and is one store lookup; good's six other requests hit. The
    // bad checksum reaches no cache.
    let cache = |n: &str, c: &str| value(&m, n, &[("cache", c)]).unwrap();
    assert_eq!(cache("portcullis_key_cache_misses_total", "positive"), 4.0);
    assert_eq!(cache("portcullis_key_cache_misses_total", "negative"), 4.0);
    assert_eq!(cache("portcullis_key_cache_hits_total", "negative"), 0.0);
    assert_eq!(cache("portcullis_key_cache_hits_total", "positive"), 6.0);
    assert_eq!(
        value(
            &m,
            "portcullis_store_lookup_duration_seconds_count",
            &[("result", "found")]
        ),
        Some(4.0)
    );
    assert_eq!(value(&m, "portcullis_store_up", &[]), Some(1.0));
    assert_eq!(value(&m, "portcullis_store_breaker_open", &[]), Some(0.0));
    // The analytics counted the keys' decisions (analytics are on by
    // default); none was dropped.
    assert!(
        value(
            &m,
            "portcullis_analytics_decisions_total",
            &[("row", "key")]
        )
        .is_some_and(|n| n >= 1.0),
        "{m:?}"
    );
    assert_eq!(
        value(&m, "portcullis_analytics_dropped_decisions_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "portcullis_ratelimit_breaker_state",
            &[("state", "closed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "portcullis_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Every metric has its help text.
    for name in m.iter().map(|s| &s.name) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf))
            .filter(|f| text.contains(&format!("# TYPE {f} histogram")))
            .unwrap_or(name);
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
    }
    promtool_check_metrics(&text);

    // No key, no key id, no owner: labels are bounded by construction.
    let secrets: Vec<String> = [&admin, &scraper, &good, &weak, &gone, &bad]
        .iter()
        .map(|k| (*k).clone())
        .collect();
    assert_no_secrets(&text, &secrets);
    for id in [&good_id, &weak_id, &gone_id] {
        assert!(!text.contains(id.as_str()), "{id} in the exposition");
    }
    for owner in ["\"good\"", "\"weak\"", "\"gone\"", "\"prom\""] {
        assert!(!text.contains(owner), "{owner} in the exposition");
    }
    drop(s);
}

#[test]
fn metrics_need_a_key_with_scope_metrics_or_admin() {
    let env = Env::new(CFG);
    let admin = env.init();
    let scraper = env.create_key(&["--name", "prom", "--scopes", "metrics"]);
    let other = env.create_key(&["--name", "other", "--scopes", "data:read"]);
    let _s = env.serve();
    let c = client();
    let status = |key: Option<&str>, header: bool| {
        let mut r = c.get(env.admin_url("/metrics"));
        match (key, header) {
            (Some(k), true) => r = r.header("x-api-key", k),
            (Some(k), false) => r = r.bearer_auth(k),
            (None, _) => {}
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(status(None, false), 401);
    assert_eq!(status(Some(&other), false), 403);
    assert_eq!(status(Some("pc_live_not_a_key"), false), 401);
    assert_eq!(status(Some(&scraper), false), 200);
    assert_eq!(status(Some(&scraper), true), 200);
    assert_eq!(status(Some(&admin), false), 200);
    // Only GET and HEAD; the public listener has no /metrics.
    let r = c
        .post(env.admin_url("/metrics"))
        .bearer_auth(&scraper)
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(c.get(env.url("/metrics")).send().unwrap().status(), 404);
    // A key with scope metrics reads metrics, not the admin API.
    let r = c
        .get(env.admin_url("/admin/v1/keys"))
        .header("x-api-key", &scraper)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn own_listener_and_switched_off() {
    let port = free_port();
    let env = Env::new(&format!(
        "{CFG}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\nrequire_key = false\n"
    ));
    env.init();
    let _s = env.serve();
    let c = client();
    let url = format!("http://127.0.0.1:{port}");
    let r = c.get(format!("{url}/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    promtool_check_metrics(&r.text().unwrap());
    // A page on a rebound DNS name names its own host: refused (and
    // `localhost` is fine).
    let r = c
        .get(format!("{url}/metrics"))
        .header("Host", format!("attacker.example:{port}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .get(format!("{url}/metrics"))
        .header("Host", format!("localhost:{port}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(format!("{url}/admin/v1/keys"))
            .send()
            .unwrap()
            .status(),
        404
    );
    // The admin listener still asks for a key.
    assert_eq!(
        c.get(env.admin_url("/metrics")).send().unwrap().status(),
        401
    );

    let env = Env::new(&format!("{CFG}\n[metrics]\nenabled = false\n"));
    let admin = env.init();
    let _s = env.serve();
    let r = c
        .get(env.admin_url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // A listener anyone can reach, without a key: refused at start.
    let env = Env::new(&format!(
        "{CFG}\n[metrics]\nlisten = \"0.0.0.0:{port}\"\nrequire_key = false\n"
    ));
    let o = env.cli(&["config", "check"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("metrics.require_key: false is allowed only on a loopback address"),
        "{err}"
    );
}

/// A Debian `prometheus` server in its own temp dir on a free loopback
/// port, scraping `target`'s `/metrics` every second with the bearer key
/// in `credentials_file`. Killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, key: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cred = dir.path().join("key");
        std::fs::write(&cred, key).unwrap();
        let cfg = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: portcullis\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
            path_str(&cred)
        );
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(tool(PROMETHEUS))
            .arg(format!("--config.file={}", path_str(&cfg_path)))
            .arg(format!(
                "--storage.tsdb.path={}",
                path_str(&dir.path().join("data"))
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// The whole answer to an instant query.
    fn query_raw(&self, q: &str) -> serde_json::Value {
        client()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", q)])
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// The result vector of an instant query (empty when the server is
    /// not up yet or has nothing).
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let r = client()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", q)])
            .send();
        let Ok(r) = r else { return Vec::new() };
        let Ok(v) = r.json::<serde_json::Value>() else {
            return Vec::new();
        };
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_gateway() {
    let env = Env::new(CFG);
    env.init();
    let scraper = env.create_key(&["--name", "prom", "--scopes", "metrics"]);
    let good = env.create_key(&["--name", "good", "--scopes", "data:read"]);
    let _s = env.serve();
    let c = client();
    for _ in 0..2 {
        let r = c.get(env.url("/data")).header("x-api-key", &good).send();
        assert_eq!(r.unwrap().status(), 200);
    }
    assert_eq!(c.get(env.url("/data")).send().unwrap().status(), 401);
    let p = Prometheus::start(&format!("127.0.0.1:{}", env.admin_port), &scraper);
    let wanted = [
        (
            r#"portcullis_admission_decisions_total{route="/data",outcome="valid"}"#,
            "2",
        ),
        (
            r#"portcullis_admission_decisions_total{route="/data",outcome="missing"}"#,
            "1",
        ),
        (r#"up{job="portcullis"}"#, "1"),
        (r#"portcullis_store_up"#, "1"),
        (
            r#"portcullis_http_request_duration_seconds_count{route="/data"}"#,
            "3",
        ),
    ];
    let mut last = Vec::new();
    let seen = within(Duration::from_secs(60), || {
        last = wanted.iter().map(|(q, _)| p.query(q)).collect::<Vec<_>>();
        last.iter()
            .zip(&wanted)
            .all(|(r, (_, want))| r.len() == 1 && r[0]["value"][1].as_str() == Some(want))
    });
    assert!(
        seen.is_some(),
        "prometheus did not see the series: {last:?}\n{}",
        p.log()
    );
    // The target is up only because the bearer key from the file was
    // accepted: without it /metrics answers 401.
    // Every query of the dashboard and of the alerting rules is valid
    // PromQL to this Prometheus, and each finds series here.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/grafana/portcullis-dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(
                t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*"),
            );
        }
    }
    assert!(exprs.len() > 10);
    for e in &exprs {
        let v = p.query_raw(e);
        assert_eq!(v["status"], "success", "dashboard query {e}: {v}");
    }
    // What Prometheus stored names no key.
    let all = p.query(r#"{__name__=~"portcullis_.+"}"#);
    let stored = serde_json::to_string(&all).unwrap();
    assert!(stored.contains("portcullis_http_requests_total"));
    assert_no_secrets(&stored, &[scraper.clone(), good.clone()]);
}

#[test]
fn the_example_alerting_rules_pass_promtool() {
    let rules: &Path = &repo_root().join("docs/alerts.yml");
    let o = Command::new(tool(PROMTOOL))
        .args(["check", "rules"])
        .arg(rules)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "promtool check rules docs/alerts.yml: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_dashboard_is_json_over_metrics_that_exist() {
    let text = std::fs::read_to_string(repo_root().join("docs/grafana/portcullis-dashboard.json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let names =
        std::fs::read_to_string(repo_root().join("crates/portcullis/src/metrics.rs")).unwrap();
    // Every portcullis_ name a panel queries is one the library defines.
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(base) = word.strip_prefix("portcullis_") {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| base.strip_suffix(s))
                .unwrap_or(base);
            assert!(
                names.contains(&format!("\"portcullis_{family}\"")),
                "the dashboard queries portcullis_{base}, which no metric is"
            );
        }
    }
}

#[test]
fn upstream_errors_and_redis_figures() {
    let mut redis = crate::redis_server::RedisServer::start();
    let up = upstream();
    // A port nobody listens on: the connection is refused.
    let closed = free_port();
    let env = Env::new(&format!(
        r#"
[rate_limit]
backend = "{redis}"
timeout_ms = 1000
on_backend_error = "local"
breaker_threshold = 1
breaker_cooldown = "1h"

[[routes]]
path = "/ok"
methods = ["GET"]
upstream = "http://{up}"
rate_limit = "100/hour"
rate_limit_by = "route"

[[routes]]
path = "/down"
methods = ["GET"]
upstream = "http://127.0.0.1:{closed}"
"#,
        redis = redis.url(),
        up = up.addr,
    ));
    env.init();
    let scraper = env.create_key(&["--name", "prom", "--scopes", "metrics"]);
    let _s = env.serve();
    let c = client();
    for _ in 0..3 {
        assert_eq!(c.get(env.url("/ok")).send().unwrap().status(), 200);
    }
    assert_eq!(c.get(env.url("/down")).send().unwrap().status(), 502);
    let m = parse(&scrape(&env, &scraper));
    let v = |name: &str, labels: &[(&str, &str)]| value(&m, name, labels);
    assert_eq!(
        v("portcullis_upstream_errors_total", &[("kind", "connect")]),
        Some(1.0)
    );
    assert_eq!(
        v("portcullis_upstream_errors_total", &[("kind", "timeout")]),
        Some(0.0)
    );
    assert_eq!(
        v(
            "portcullis_upstream_duration_seconds_count",
            &[("route", "/ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        v(
            "portcullis_upstream_duration_seconds_count",
            &[("route", "/down")]
        ),
        Some(1.0)
    );
    assert_eq!(requests(&m, "/down", "GET", "502"), Some(1.0));
    assert_eq!(
        v(
            "portcullis_ratelimit_redis_duration_seconds_count",
            &[("result", "ok")]
        ),
        Some(3.0)
    );
    let state =
        |m: &[Sample], s: &str| value(m, "portcullis_ratelimit_breaker_state", &[("state", s)]);
    assert_eq!(state(&m, "closed"), Some(1.0));
    assert_eq!(state(&m, "open"), Some(0.0));
    assert_eq!(
        v("portcullis_ratelimit_fallback_decisions_total", &[]),
        Some(0.0)
    );

    // Redis gone: the first decision fails and opens the breaker (threshold
    // 1); it and the next two are decided locally.
    redis.stop();
    for _ in 0..3 {
        assert_eq!(c.get(env.url("/ok")).send().unwrap().status(), 200);
    }
    let m = parse(&scrape(&env, &scraper));
    let v = |name: &str, labels: &[(&str, &str)]| value(&m, name, labels);
    assert_eq!(state(&m, "open"), Some(1.0));
    assert_eq!(state(&m, "closed"), Some(0.0));
    assert_eq!(
        v("portcullis_ratelimit_fallback_decisions_total", &[]),
        Some(3.0)
    );
    assert_eq!(v("portcullis_ratelimit_redis_errors_total", &[]), Some(1.0));
    assert_eq!(
        v("portcullis_ratelimit_breaker_opened_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        v(
            "portcullis_ratelimit_redis_duration_seconds_count",
            &[("result", "error")]
        ),
        Some(1.0)
    );
    // The Redis URL is no label.
    assert!(!scrape(&env, &scraper).contains("redis://"));
}
