//! External issuers against a real OpenID provider: panva's oidc-provider
//! (npm, OpenID Certified; pinned in tests/oidc/package.json), run by
//! tests/oidc/provider.mjs on loopback over HTTPS with a CA this test makes,
//! so the gateway's HTTPS fetch (discovery, then jwks_uri) is the path
//! tested. The provider issues client-credentials access tokens as JWTs
//! (RS256, `typ: at+jwt`).
//!
//! Needs node and `npm ci` in tests/oidc (scripts/install-test-deps.sh).
//! Without them the tests are skipped, unless REQUIRE_BROWSER_TESTS is set
//! (CI sets it), when they fail.

use crate::harness::*;
use crate::oauth::{kid, status_of};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AUDIENCE: &str = "https://api.portcullis.test";

/// Generous deadlines for asynchronous things (never the thing tested).
const WAIT: Duration = Duration::from_secs(60);

fn oidc_dir() -> PathBuf {
    repo_root().join("tests/oidc")
}

/// Whether node and the provider are installed (crate::optional).
fn provider_available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let module = oidc_dir()
        .join("node_modules/oidc-provider/package.json")
        .exists();
    let missing: &[&str] = match (node, module) {
        (false, _) => &["node"],
        (true, false) => &["tests/oidc/node_modules (npm ci)"],
        (true, true) => &[],
    };
    crate::optional::present_or_skip(
        "oidc-provider test",
        missing,
        "node and tests/oidc's modules",
    )
}

/// A running oidc-provider (killed on drop).
struct Provider {
    child: Child,
    issuer: String,
    other_issuer: String,
    client_id: String,
    client_secret: String,
    ca_pem: String,
    ca_file: PathBuf,
    stderr: PathBuf,
}

impl Provider {
    fn start(dir: &Path) -> Provider {
        let certs = make_certs(dir, "oidc", &["127.0.0.1"]);
        let stderr = dir.join("oidc-provider.log");
        // Node has been seen, once in many runs on a loaded machine, to
        // hang before it listens: give each start a deadline, and try a
        // few times before failing.
        let mut tries = 0;
        let (child, first) = loop {
            tries += 1;
            let mut child = Command::new("node")
                .arg(oidc_dir().join("provider.mjs"))
                .arg("--cert")
                .arg(&certs.cert)
                .arg("--key")
                .arg(&certs.key)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut first = String::new();
                let _ = BufReader::new(out).read_line(&mut first);
                let _ = tx.send(first);
            });
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(first) if !first.is_empty() => break (child, first),
                _ if tries < 3 => {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!("provider.mjs did not start in 60 s; trying again");
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "provider.mjs did not start in {tries} tries\n{}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    );
                }
            }
        };
        let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| {
            panic!(
                "provider.mjs did not start ({e}): {first:?}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        Provider {
            child,
            issuer: s("issuer"),
            other_issuer: s("other_issuer"),
            client_id: s("client_id"),
            client_secret: s("client_secret"),
            ca_pem: certs.ca_pem,
            ca_file: certs.ca_file,
            stderr,
        }
    }

    fn client(&self) -> reqwest::blocking::Client {
        tls_client(&self.ca_pem, false)
    }

    /// A client-credentials access token from `issuer` for `resource`.
    fn token_from(&self, issuer: &str, scope: &str, resource: &str) -> String {
        let r = self
            .client()
            .post(format!("{issuer}/token"))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("resource", resource),
            ])
            .send()
            .unwrap();
        let st = r.status();
        let body: Value = r.json().unwrap();
        assert_eq!(st, 200, "token endpoint: {body}\n{}", self.log());
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn token(&self, scope: &str) -> String {
        self.token_from(&self.issuer, scope, AUDIENCE)
    }

    /// The answer of provider.mjs's test endpoint `/__test/{name}`.
    fn test_endpoint(&self, method: reqwest::Method, name: &str) -> Value {
        self.client()
            .request(method, format!("{}/__test/{name}", self.issuer))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Requests served: `jwks`, `discovery`.
    fn stats(&self) -> (u64, u64) {
        let v = self.test_endpoint(reqwest::Method::GET, "stats");
        (
            v["jwks"].as_u64().unwrap(),
            v["discovery"].as_u64().unwrap(),
        )
    }

    /// A new signing key; the JWKS then publishes only it.
    fn rotate(&self) -> String {
        let v = self.test_endpoint(reqwest::Method::POST, "rotate");
        v["kid"].as_str().unwrap().to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/data` needs `data:read`, `/write` needs `data:write`; both bearer.
fn config(p: &Provider, issuer_extra: &str) -> String {
    // A hundred made-up kids from one address on purpose: address
    // blocking, which would answer the later ones 429, is abuse.rs's.
    format!(
        r#"
[abuse]
enabled = false

[[routes]]
path = "/data"
upstream = "demo"
auth = ["bearer"]
scopes = ["data:read"]

[[routes]]
path = "/write"
upstream = "demo"
auth = ["bearer"]
scopes = ["data:write"]

[[tokens.trusted_issuers]]
issuer = "{issuer}"
audience = ["https://another-api.test", "{AUDIENCE}"]
algorithms = ["RS256"]
ca_file = "{ca}"
leeway = "0s"
{issuer_extra}
"#,
        issuer = p.issuer,
        ca = p.ca_file.display()
    )
}

fn ready(env: &Env) -> u16 {
    client()
        .get(env.url("/readyz"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// The `portcullis_jwks_*` lines of `GET /metrics` (admin listener).
fn jwks_metrics(env: &Env, key: &str) -> String {
    let text = client()
        .get(env.admin_url("/metrics"))
        .header("x-api-key", key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("portcullis_jwks_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a metrics line with all of `parts` has the value `value`.
fn has_metric(text: &str, parts: &[&str], value: &str) -> bool {
    text.lines()
        .any(|l| parts.iter().all(|p| l.contains(p)) && l.rsplit(' ').next() == Some(value))
}

/// A token naming `issuer` and a made-up `kid` (signed with nothing the
/// provider knows).
fn made_up_kid(issuer: &str, n: usize) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(format!("made-up-{n}"));
    h.typ = Some("at+jwt".into());
    let claims = json!({"iss": issuer, "sub": "svc", "aud": AUDIENCE, "exp": 4_000_000_000u64, "scope": "data:read data:write"});
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"attacker key, 32 bytes or more!!"),
    )
    .unwrap()
}

/// Discovery, scopes mapped, expired / wrong-audience / wrong-issuer
/// refused, a key rotation followed by one refetch, a flood of made-up
/// kids costing no fetch, and the RFC 8725 corpus.
#[test]
fn oidc_provider_tokens_on_a_bearer_route() {
    if !provider_available() {
        return;
    }
    let env = Env::new("");
    let p = Provider::start(env.dir.path());
    std::fs::write(
        env.config(),
        std::fs::read_to_string(env.config()).unwrap()
            + &config(&p, "kid_refetch_interval = \"1h\""),
    )
    .unwrap();
    env.init();
    let mkey = env.create_key(&["--name", "prometheus", "--scopes", "metrics"]);
    let srv = env.serve();
    let log = || format!("gateway:\n{}\nprovider:\n{}", srv.log(), p.log());

    // Discovery, then the JWKS, over HTTPS with the test CA.
    assert_eq!(ready(&env), 200, "{}", log());
    let (jwks0, disc0) = p.stats();
    assert_eq!(
        (jwks0, disc0),
        (1, 1),
        "one discovery and one JWKS fetch at start"
    );

    // Accepted, with the scopes the provider granted.
    let read = p.token("data:read");
    assert_eq!(status_of(&env, "/data", &read), 200, "{}", log());
    assert_eq!(status_of(&env, "/write", &read), 403, "data:read only");
    let both = p.token("data:read data:write");
    assert_eq!(status_of(&env, "/write", &both), 200, "{}", log());

    // Another audience, another issuer (same key, same kid!), expired.
    let other_aud = p.token_from(&p.issuer, "data:read", "urn:portcullis:other");
    assert_eq!(status_of(&env, "/data", &other_aud), 401, "wrong audience");
    let other_iss = p.token_from(&p.other_issuer, "data:read", AUDIENCE);
    assert_eq!(
        kid(&other_iss),
        kid(&read),
        "the other issuer shares the key"
    );
    assert_eq!(status_of(&env, "/data", &other_iss), 401, "wrong issuer");
    let logged = within(WAIT, || {
        srv.log().contains("\"reason\":\"jwt_wrong_issuer\"")
            && srv.log().contains("\"reason\":\"jwt_wrong_audience\"")
    });
    assert!(logged.is_some(), "{}", log());
    let short = p.token_from(&p.issuer, "data:read", "urn:portcullis:short");
    let expired = within(WAIT, || status_of(&env, "/data", &short) == 401);
    assert!(expired.is_some(), "a 2-second token never expired");
    let logged = within(WAIT, || srv.log().contains("\"reason\":\"jwt_expired\""));
    assert!(logged.is_some(), "{}", log());

    // Rotation: tokens under the new kid, sent at once from several
    // threads, share one refetch and are all accepted.
    let before = p.stats();
    let new_kid = p.rotate();
    let fresh: Vec<String> = (0..8).map(|_| p.token("data:read")).collect();
    assert!(fresh.iter().all(|t| kid(t) == new_kid));
    std::thread::scope(|s| {
        for t in &fresh {
            let env = &env;
            s.spawn(move || assert_eq!(status_of(env, "/data", t), 200));
        }
    });
    let after = p.stats();
    assert_eq!(after.0, before.0 + 1, "one JWKS fetch for the new kid");
    let fresh = fresh[0].clone();
    assert_eq!(status_of(&env, "/data", &fresh), 200);

    // A flood of made-up kids, from several threads at once: no fetch
    // (the one allowed per kid_refetch_interval was spent above).
    std::thread::scope(|s| {
        for t in 0..4 {
            let env = &env;
            let issuer = p.issuer.clone();
            s.spawn(move || {
                for n in 0..25 {
                    let tok = made_up_kid(&issuer, t * 100 + n);
                    assert_eq!(status_of(env, "/data", &tok), 401);
                }
            });
        }
    });
    assert_eq!(p.stats().0, after.0, "made-up kids caused JWKS fetches");
    let m = jwks_metrics(&env, &mkey);
    assert!(
        has_metric(
            &m,
            &[
                "portcullis_jwks_fetches_total{",
                "trigger=\"unknown_kid\"",
                "result=\"ok\""
            ],
            "1"
        ),
        "{m}"
    );
    assert!(
        has_metric(&m, &["portcullis_jwks_state{", "state=\"fresh\""], "1"),
        "{m}"
    );
    assert!(has_metric(&m, &["portcullis_jwks_keys{"], "1"), "{m}");

    // The RFC 8725 corpus, derived from a valid token of this provider.
    let jwks = p
        .client()
        .get(format!("{}/jwks", p.issuer))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let fetched_for_corpus = p.stats().0;
    let jwks_file = env.dir.path().join("provider-jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    let trap_url = format!("http://127.0.0.1:{}/", trap.local_addr().unwrap().port());
    let o = Command::new(venv_python())
        .arg(repo_root().join("tests/python/jwt_attacks.py"))
        .arg("--jwks-file")
        .arg(&jwks_file)
        .args([
            "--token",
            &fresh,
            "--other-token",
            &both,
            "--jku-url",
            &trap_url,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "jwt_attacks.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let c = client();
    let mut failures = Vec::new();
    let mut sent = 0;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let (name, token) = (v["name"].as_str().unwrap(), v["token"].as_str().unwrap());
        let Ok(h) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) else {
            continue;
        };
        sent += 1;
        let st = c
            .get(env.url("/data"))
            .header("authorization", h)
            .send()
            .unwrap()
            .status()
            .as_u16();
        if !(st == 401 || (st == 431 && token.len() > 8 * 1024)) {
            failures.push(format!("{name}: {st}"));
        }
    }
    assert!(sent > 50, "only {sent} attack tokens");
    assert!(
        failures.is_empty(),
        "attack tokens not refused on the external-issuer route:\n{}",
        failures.join("\n")
    );
    trap.set_nonblocking(true).unwrap();
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the gateway connected to a token's jku/x5u"
    );
    assert_eq!(
        p.stats().0,
        fetched_for_corpus,
        "the corpus (unknown kids among it) caused JWKS fetches"
    );
    assert_eq!(
        status_of(&env, "/data", &fresh),
        200,
        "valid after the corpus"
    );
    drop(srv);
}

/// The provider stopped: the last good key set keeps serving (readiness
/// stays ready), then past `stale_for` the issuer's tokens get 503 and
/// readiness says not ready.
#[test]
fn oidc_provider_down_stale_keys_then_refusal() {
    if !provider_available() {
        return;
    }
    let env = Env::new("");
    let mut p = Provider::start(env.dir.path());
    // Keys are fresh for 1s (max-age 300 clamped), then stale for 15s.
    std::fs::write(
        env.config(),
        std::fs::read_to_string(env.config()).unwrap()
            + &config(
                &p,
                "min_refresh = \"1s\"\nmax_refresh = \"1s\"\nstale_for = \"15s\"\nkid_refetch_interval = \"1h\"",
            ),
    )
    .unwrap();
    env.init();
    let mkey = env.create_key(&["--name", "prometheus", "--scopes", "metrics"]);
    let srv = env.serve();
    let plog = p.stderr.clone();
    let log = || {
        format!(
            "gateway:\n{}\nprovider:\n{}",
            srv.log(),
            std::fs::read_to_string(&plog).unwrap_or_default()
        )
    };
    let tok = p.token("data:read");
    let uncached = p.token("data:read");
    assert_eq!(status_of(&env, "/data", &tok), 200, "{}", log());
    // Refreshed in the background while the provider is up.
    let refreshed = within(WAIT, || p.stats().0 >= 2);
    assert!(refreshed.is_some(), "no background refresh: {}", log());

    p.stop();
    // Stale-if-error: the refresh fails, the last good set still serves,
    // a token never seen before included.
    let stale = within(WAIT, || {
        srv.log()
            .contains("cannot refresh a trusted issuer's keys; keeping the last good set")
    });
    assert!(stale.is_some(), "{}", log());
    assert_eq!(
        status_of(&env, "/data", &uncached),
        200,
        "stale set: {}",
        log()
    );
    assert_eq!(ready(&env), 200, "a stale set still serving is ready");

    // Past stale_for: 503 for the issuer's tokens; the instance stays
    // ready (every instance shares the provider: draining them all would
    // take API keys down too), and readiness names the issuer.
    let refused = within(WAIT, || status_of(&env, "/data", &tok) == 503);
    assert!(refused.is_some(), "{}", log());
    let r = client().get(env.url("/readyz")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", log());
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["degraded"][0]
            .as_str()
            .is_some_and(|d| d.contains("has no usable keys")),
        "readiness names the issuer: {body}"
    );
    // The state gauge follows within a few seconds (the refresher's tick).
    let mut m = String::new();
    let gauge = within(WAIT, || {
        m = jwks_metrics(&env, &mkey);
        has_metric(&m, &["portcullis_jwks_state{", "state=\"unusable\""], "1")
    });
    assert!(gauge.is_some(), "{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("portcullis_jwks_fetches_total{")
                && l.contains("trigger=\"scheduled\"")
                && l.contains("result=\"error\"")),
        "failed refreshes are counted: {m}"
    );
    drop(srv);
}

portcullis::scopes!(ReadData = ["data:read"]);
portcullis::scopes!(WriteData = ["data:write"]);

/// The library: a service built with one `trust_issuer` call accepts the
/// provider's tokens in its extractors (discovery over HTTPS with the
/// test CA, scopes mapped), and refuses another audience's.
#[test]
fn library_builder_trusts_the_provider() {
    use axum::body::Body;
    use axum::routing::get;
    use portcullis::auth::jwt::TrustedIssuer;
    use portcullis::schemes::HttpBearer;
    use portcullis::{Portcullis, Verified};
    use tower::ServiceExt;

    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Provider::start(dir.path());
    let read = p.token("data:read");
    let other_aud = p.token_from(&p.issuer, "data:read", "urn:portcullis:other");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pc = Portcullis::builder()
            .store(&format!("sqlite://{}/service.db", dir.path().display()))
            .trust_issuer(
                TrustedIssuer::discover(&p.issuer)
                    .audience(AUDIENCE)
                    .ca_file(&p.ca_file),
            )
            .build()
            .await
            .unwrap();
        async fn data(v: Verified<HttpBearer, ReadData>) -> String {
            v.principal().subject.to_string()
        }
        async fn write(_: Verified<HttpBearer, WriteData>) -> &'static str {
            "written"
        }
        let app = axum::Router::new()
            .route("/data", get(data))
            .route("/write", get(write))
            .layer(pc.layer());
        let call = |path: &str, token: &str| {
            let req = http::Request::get(path)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(req)
        };
        let r = call("/data", &read).await.unwrap();
        assert_eq!(r.status(), 200);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"svc", "the principal is the token's sub");
        assert_eq!(call("/write", &read).await.unwrap().status(), 403);
        assert_eq!(call("/data", &other_aud).await.unwrap().status(), 401);
        assert_eq!(call("/data", "not-a-token").await.unwrap().status(), 401);
    });
}

/// What `config check` (and so `serve`) refuses in a trusted issuer,
/// naming the key; none of it needs the provider.
#[test]
fn trusted_issuer_settings_refused_at_start() {
    let cases: &[(&str, &str, &str)] = &[
        ("algorithms = [\"HS256\"]", "algorithms", "asymmetric"),
        ("algorithms = [\"none\"]", "algorithms", "asymmetric"),
        ("algorithms = []", "algorithms", "at least one"),
        (
            "algorithms = [\"RS256\"]\nissuer_http = 1",
            "issuer_http",
            "unknown field",
        ),
        (
            "algorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:1/jwks\"",
            "jwks_url",
            "HTTPS",
        ),
        (
            "algorithms = [\"RS256\"]\njwks_url = \"https://x.test/k\"\njwks_file = \"k.json\"",
            "jwks_url",
            "not both",
        ),
        (
            "algorithms = [\"RS256\"]\nstale_for = \"8d\"",
            "stale_for",
            "7d",
        ),
        (
            "algorithms = [\"RS256\"]\nmin_refresh = \"2h\"\nmax_refresh = \"1h\"",
            "min_refresh",
            "max_refresh",
        ),
        ("algorithms = [\"RS256\"]\nleeway = \"5m\"", "leeway", "60s"),
        (
            "algorithms = [\"RS256\"]\nca_file = \"/nonexistent/ca.pem\"",
            "trusted_issuers[0]",
            "/nonexistent/ca.pem",
        ),
        (
            "algorithms = [\"RS256\"]\njwks_file = \"k.json\"\nstale_for = \"1h\"",
            "stale_for",
            "network",
        ),
        (
            "algorithms = [\"RS256\"]\nmax_refresh = \"8d\"",
            "max_refresh",
            "7d",
        ),
        (
            "algorithms = [\"RS256\"]\nmin_refresh = \"0s\"",
            "min_refresh",
            "1s",
        ),
        (
            "algorithms = [\"RS256\"]\nkid_refetch_interval = \"0s\"",
            "kid_refetch_interval",
            "1s",
        ),
        (
            "algorithms = [\"RS256\"]\nkid_refetch_interval = \"2d\"",
            "kid_refetch_interval",
            "1d",
        ),
        (
            "algorithms = [\"RS256\"]\nallowed_claims = { hd = [] }",
            "allowed_claims",
            "at least one value",
        ),
    ];
    for (extra, key, says) in cases {
        let env = Env::new(&format!(
            "[[tokens.trusted_issuers]]\nissuer = \"https://login.example.com\"\naudience = \"api\"\n{extra}\n"
        ));
        let o = env.cli(&["config", "check"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra}: accepted");
        assert!(
            err.contains(key) && err.contains(says),
            "{extra}: want {key} / {says}, got {err}"
        );
    }
    // Google signs tokens for anyone with a Google account: refused
    // without saying whose are accepted.
    let google = "[[tokens.trusted_issuers]]\nissuer = \"https://accounts.google.com\"\naudience = \"api\"\nalgorithms = [\"RS256\"]\n";
    let env = Env::new(google);
    let o = env.cli(&["config", "check"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trusted_issuers[0].allowed_claims"),
        "{err}"
    );
    let twice = "[[tokens.trusted_issuers]]\nissuer = \"https://login.example.com\"\naudience = \"api\"\nalgorithms = [\"RS256\"]\n";
    let env = Env::new(&format!("{twice}{twice}"));
    let o = env.cli(&["config", "check"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trusted_issuers[1].issuer") && err.contains("twice"),
        "{err}"
    );
    // Plain HTTP for a local test, said plainly.
    let env = Env::new(
        "[[tokens.trusted_issuers]]\nissuer = \"http://127.0.0.1:1\"\naudience = \"api\"\nalgorithms = [\"RS256\"]\ndanger_allow_http = true\n",
    );
    let o = env.cli(&["config", "check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Base64url without padding (the test crate has no base64 dependency).
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A trusted issuer of our own making (a JWKS file, an Ed25519 key) whose
/// tokens carry whatever claims the test asks.
struct FileIssuer {
    key: jsonwebtoken::EncodingKey,
    jwks: PathBuf,
}

const FILE_ISSUER: &str = "https://idp.example";

impl FileIssuer {
    fn new(dir: &Path) -> FileIssuer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let jwks = dir.join("idp-jwks.json");
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "idp-1", "use": "sig",
            "x": b64url(kp.public_key_raw())});
        std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
        FileIssuer {
            key: jsonwebtoken::EncodingKey::from_ed_der(&kp.serialize_der()),
            jwks,
        }
    }
    /// A valid token for `sub`, with `extra` claims added or replaced.
    fn token(&self, sub: &str, extra: Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some("idp-1".into());
        h.typ = Some("at+jwt".into());
        let mut c = json!({"iss": FILE_ISSUER, "sub": sub, "aud": "api", "exp": now + 600,
            "iat": now, "scope": "data:read admin", "azp": "app-1"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        jsonwebtoken::encode(&h, &c, &self.key).unwrap()
    }
}

/// Another issuer's subject is not one of ours: the upstream (and a proxy
/// asking the decision endpoint) sees kind `external` and the issuer; an
/// `admin` scope from it does not open the admin API; `allowed_claims`
/// limits whose tokens are accepted; a subject that cannot be a header
/// value is refused. None of it needs the provider.
#[test]
fn external_principals_are_apart_from_ours() {
    let up = upstream();
    let env = Env::new("");
    let idp = FileIssuer::new(env.dir.path());
    std::fs::write(
        env.config(),
        std::fs::read_to_string(env.config()).unwrap()
            + &format!(
                r#"
[[routes]]
path = "/data"
upstream = "http://{up}"
auth = ["bearer"]
scopes = ["data:read"]

[[tokens.trusted_issuers]]
issuer = "{FILE_ISSUER}"
audience = "api"
jwks_file = "{jwks}"
algorithms = ["EdDSA"]
allowed_claims = {{ azp = ["app-1", "app-2"] }}
"#,
                jwks = idp.jwks.display(),
                up = up.addr,
            ),
    )
    .unwrap();
    let admin = env.init();
    let srv = env.serve();
    let c = client();
    let tok = idp.token("alice", json!({}));

    // The upstream: who, of which kind, from which issuer; a client's own
    // X-Portcullis-Issuer is dropped.
    let r = c
        .get(env.url("/data"))
        .bearer_auth(&tok)
        .header("x-portcullis-issuer", "https://evil.test")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", srv.log());
    let b: Value = r.json().unwrap();
    let h = &b["headers"];
    assert_eq!(h["x-portcullis-principal"], json!(["alice"]), "{b}");
    assert_eq!(h["x-portcullis-kind"], json!(["external"]), "{b}");
    assert_eq!(h["x-portcullis-issuer"], json!([FILE_ISSUER]), "{b}");

    // The decision endpoint says the same to the proxy.
    let r = c
        .get(env.url("/auth/verify"))
        .header("X-Forwarded-Uri", "/data")
        .header("X-Forwarded-Method", "GET")
        .bearer_auth(&tok)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-portcullis-kind"], "external");
    assert_eq!(r.headers()["x-portcullis-issuer"], FILE_ISSUER);
    // Our own principals carry no issuer header.
    let r = c
        .get(env.url("/auth/verify"))
        .header("X-Forwarded-Uri", "/data")
        .header("X-API-Key", &admin)
        .send()
        .unwrap();
    assert!(!r.headers().contains_key("x-portcullis-issuer"));

    // An `admin` scope from another issuer administers nothing here (the
    // gateway's admin listener takes API keys only; the library's admin
    // router refuses external principals: jwks_fetch.rs in portcullis).
    let r = c
        .get(env.admin_url("/admin/v1/keys"))
        .bearer_auth(&tok)
        .send()
        .unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", srv.log());
    let r = c
        .get(env.admin_url("/admin/v1/keys"))
        .header("x-api-key", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // allowed_claims: another app's token, or one naming none, refused.
    assert_eq!(
        status_of(&env, "/data", &idp.token("alice", json!({"azp": "app-2"}))),
        200
    );
    for extra in [
        json!({"azp": "app-3"}),
        json!({"azp": ["app-3"]}),
        json!({"azp": null}),
    ] {
        assert_eq!(
            status_of(&env, "/data", &idp.token("alice", extra.clone())),
            401,
            "{extra}"
        );
    }
    // A subject that cannot be a header value, or too long: refused, not
    // passed on without X-Portcullis-Principal.
    for sub in ["jos\u{e9}", "a\u{1}b", &"a".repeat(257)] {
        assert_eq!(
            status_of(&env, "/data", &idp.token(sub, json!({}))),
            401,
            "{sub:?}"
        );
    }
    let logged = within(WAIT, || {
        let l = srv.log();
        l.contains("\"reason\":\"jwt_bad_subject\"")
            && l.contains("\"reason\":\"jwt_claim_not_allowed\"")
    });
    assert!(logged.is_some(), "{}", srv.log());
}
