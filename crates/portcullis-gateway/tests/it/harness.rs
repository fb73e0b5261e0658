//! Starting the real binary and a real upstream on free loopback ports.

#![allow(dead_code)]

use std::io::Read;
// The canary helpers, shared with the seed app's tests.
pub use crate::secrets::{assert_no_secrets, b64, secret_forms};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

pub use crate::ports::free_port;

/// The variable that runs the suite on Postgres: `GATEWAY_TEST_STORE=postgres`.
/// Not `PORTCULLIS_…`: the binary refuses every `PORTCULLIS_*` variable it
/// does not read (a typo must not pass silently), every process the tests
/// start inherits the test's environment, and this process cannot drop a
/// variable from its own (`remove_var` is unsafe; the workspace forbids
/// unsafe code).
pub const TEST_STORE_VAR: &str = "GATEWAY_TEST_STORE";

/// Whether the suite runs on Postgres (`GATEWAY_TEST_STORE=postgres`)
/// instead of a SQLite file per test, so the same tests prove the
/// gateway behaves alike on both stores.
pub fn postgres_mode() -> bool {
    assert!(
        std::env::var_os("PORTCULLIS_TEST_STORE").is_none(),
        "PORTCULLIS_TEST_STORE is set: every portcullis process the tests start would refuse it \
         (an unknown PORTCULLIS_* variable); use {TEST_STORE_VAR}=postgres"
    );
    match std::env::var(TEST_STORE_VAR) {
        Ok(v) if v == "postgres" => true,
        Ok(v) if v.is_empty() || v == "sqlite" => false,
        Ok(v) => panic!("{TEST_STORE_VAR}={v:?}: use `postgres` or `sqlite`"),
        Err(_) => false,
    }
}

/// For a test about SQLite files (backups, file modes, paths): true, with
/// a line saying why, when the suite runs on Postgres, so the test can
/// return early instead of failing on something Postgres does not have.
pub fn skip_on_postgres(why: &str) -> bool {
    let skip = postgres_mode();
    if skip {
        eprintln!("skipped on Postgres: {why}");
    }
    skip
}

/// A temp dir with a config file.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    /// The `[store] url` the config names: `sqlite://DIR/p.db`, or a
    /// fresh database on the shared test cluster in Postgres mode.
    pub store_url: String,
}

impl Env {
    /// Writes a config: `[server]` and `[store]` are filled in, `extra` is
    /// appended (routes and other sections).
    pub fn new(extra: &str) -> Env {
        Env::with_server("", extra)
    }

    /// As [`Env::new`], with `server` lines added to `[server]`.
    pub fn with_server(server: &str, extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store_url = if postgres_mode() {
            crate::pg_server::PgServer::shared().fresh_db()
        } else {
            format!("sqlite://{}", dir.path().join("p.db").display())
        };
        Env::write(dir, &store_url, server, "", extra)
    }

    /// A gateway on the store at `store_url` (several gateways on one
    /// database: each gets its own dir, ports and config), with `store`
    /// lines added to `[store]` (`stale_grace`, `listen`, ...).
    pub fn on_store(store_url: &str, store: &str, extra: &str) -> Env {
        Env::write(tempfile::tempdir().unwrap(), store_url, "", store, extra)
    }

    fn write(
        dir: tempfile::TempDir,
        store_url: &str,
        server: &str,
        store: &str,
        extra: &str,
    ) -> Env {
        crypto_provider();
        let port = free_port();
        // Two free ports asked for in a row can be the same one (the
        // first was released before the second was chosen).
        let mut admin_port = free_port();
        while admin_port == port {
            admin_port = free_port();
        }
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nshutdown_grace = \"5s\"\nheader_read_timeout = \"2s\"\n{server}\n\n[store]\nurl = \"{store_url}\"\n{store}\n\n[log]\nlevel = \"trace\"\n\n{extra}\n",
        );
        std::fs::write(dir.path().join("p.toml"), cfg).unwrap();
        Env {
            dir,
            port,
            admin_port,
            store_url: store_url.to_owned(),
        }
    }

    /// Points this gateway's config at `with`'s store: one deployment,
    /// several gateways (whichever backend the suite runs on). Once, right
    /// after the Env is made (`store_url` still names the store it was
    /// made with).
    pub fn share_store(&self, with: &Env) {
        let own = format!("url = \"{}\"", self.store_url);
        let theirs = format!("url = \"{}\"", with.store_url);
        let cfg = std::fs::read_to_string(self.config()).unwrap();
        assert!(cfg.contains(&own), "{cfg}");
        std::fs::write(self.config(), cfg.replacen(&own, &theirs, 1)).unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("p.toml")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env_remove("PORTCULLIS_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a CLI command to completion with `input` on its stdin.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env_remove("PORTCULLIS_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // A command that does not read stdin closes it: not our failure.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// `users add NAME --scopes SCOPES`, the password on stdin.
    pub fn add_user(&self, name: &str, password: &str, scopes: &str) {
        let mut args = vec!["users", "add", name];
        if !scopes.is_empty() {
            args.extend_from_slice(&["--scopes", scopes]);
        }
        let o = self.cli_stdin(&args, &format!("{password}\n"));
        assert!(
            o.status.success(),
            "users add {name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// `clients add NAME --scopes SCOPES --grants GRANTS`, returning
    /// (client id, client secret).
    pub fn add_client(&self, name: &str, scopes: &str, grants: &str) -> (String, String) {
        let mut args = vec!["clients", "add", name];
        if !scopes.is_empty() {
            args.extend_from_slice(&["--scopes", scopes]);
        }
        if !grants.is_empty() {
            args.extend_from_slice(&["--grants", grants]);
        }
        let o = self.cli(&args);
        assert!(
            o.status.success(),
            "clients add {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8(o.stdout).unwrap();
        let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
        let id = lines.next().expect("clients add printed no id").to_owned();
        let secret = lines
            .next()
            .expect("clients add printed no secret")
            .to_owned();
        (id, secret)
    }

    /// `init`, returning the admin key.
    pub fn init(&self) -> String {
        let o = self.cli(&["init"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }

    /// `keys create`, returning the key.
    pub fn create_key(&self, extra: &[&str]) -> String {
        let mut args = vec!["keys", "create"];
        args.extend_from_slice(extra);
        let o = self.cli(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    }

    /// Starts `serve` and waits until it answers.
    pub fn serve(&self) -> Server {
        self.serve_env(&[])
    }

    /// As [`Env::serve`], with extra environment variables (overrides
    /// such as `PORTCULLIS_LOG__DEPENDENCY_LEVEL`).
    pub fn serve_env(&self, vars: &[(&str, &str)]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(self.config())
            .env_remove("PORTCULLIS_CONFIG")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            readers.push(std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 8192];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => log
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            }));
        }
        let s = Server {
            child,
            log,
            port: self.port,
            readers,
        };
        let mut s = s;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
            {
                break;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                for r in std::mem::take(&mut s.readers) {
                    let _ = r.join();
                }
                panic!("server exited at start ({st}): {}", s.log());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

/// A running `portcullis serve`.
pub struct Server {
    pub child: Child,
    log: Arc<Mutex<String>>,
    pub port: u16,
    /// The threads reading its stdout and stderr (end at EOF).
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then wait for exit; returns the full log.
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The process is gone (or killed): its pipes reach EOF, and the
        // readers end once they have appended everything.
        let _ = self.child.wait();
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        self.log()
    }

    /// SIGTERM, then waits (up to 30 s) for a clean exit — status 0, so
    /// the log writer's guard ran and wrote every pending line — and for
    /// both pipe readers to reach EOF, so every byte the process wrote is
    /// in the returned log. Panics if any of that does not happen: a
    /// canary must not scan a partial log.
    pub fn stop_drained(mut self) -> String {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.as_ref().is_ok_and(|s| s.success()),
            "could not SIGTERM {pid}: {sent:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "no exit 30 s after SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "exit {status:?} after SIGTERM: {}",
            self.log()
        );
        for r in std::mem::take(&mut self.readers) {
            r.join().expect("a log reader thread panicked");
        }
        let log = self.log();
        assert!(
            log.lines()
                .any(|l| l.contains("\"stopped\"") || l.ends_with("stopped")),
            "no final `stopped` line: the log writer did not flush?\n{log}"
        );
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real upstream: an HTTP server on a free port that answers every
/// request with JSON describing what it received (method, URI, headers).
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
}

pub fn upstream() -> Upstream {
    upstream_with(|_| None)
}

/// An upstream whose behaviour per path can be overridden: return
/// `Some(action)` to misbehave.
pub fn upstream_with(f: fn(&str) -> Option<Misbehave>) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in l.incoming() {
            let Ok(mut stream) = stream else { continue };
            let h = h.clone();
            std::thread::spawn(move || serve_conn(&mut stream, f, &h));
        }
    });
    Upstream { addr, hits }
}

pub enum Misbehave {
    Reset,
    Sleep(Duration),
}

fn serve_conn(
    stream: &mut std::net::TcpStream,
    f: fn(&str) -> Option<Misbehave>,
    hits: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let uri = parts.next().unwrap_or("").to_owned();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let mut body = vec![0u8; len];
        if chunked {
            body = read_chunked(&mut reader);
        } else {
            std::io::Read::read_exact(&mut reader, &mut body).ok();
        }
        hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match f(&uri) {
            Some(Misbehave::Reset) => {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
            Some(Misbehave::Sleep(d)) => std::thread::sleep(d),
            None => {}
        }
        let hv: serde_json::Map<String, serde_json::Value> =
            headers
                .iter()
                .fold(serde_json::Map::new(), |mut m, (n, v)| {
                    let e = m
                        .entry(n.clone())
                        .or_insert_with(|| serde_json::Value::Array(vec![]));
                    e.as_array_mut()
                        .unwrap()
                        .push(serde_json::Value::String(v.clone()));
                    m
                });
        let out = serde_json::json!({"method": method, "uri": uri, "headers": hv, "body": String::from_utf8_lossy(&body)}).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-upstream: yes\r\n\r\n{}",
            out.len(),
            out
        );
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A chunked body, trailers skipped.
fn read_chunked(r: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return body;
        }
        let size = line.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16).unwrap_or(0);
        if n == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t).unwrap_or(0) == 0 || t.trim().is_empty() {
                    return body;
                }
            }
        }
        let mut chunk = vec![0u8; n + 2];
        if std::io::Read::read_exact(r, &mut chunk).is_err() {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

/// reqwest's rustls needs the process's crypto provider chosen before
/// any client is built: aws-lc-rs, the project's one provider.
pub fn crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A blocking HTTP client.
pub fn client() -> reqwest::blocking::Client {
    crypto_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Polls `f` until it returns true or `limit` passes; returns the time taken.
pub fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The repo root (where `.venv` and `tests/python` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The test venv's Python, or a failure saying how to make it.
pub fn venv_python() -> PathBuf {
    let root = repo_root();
    let py = root.join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/install-test-deps.sh (from {}) to create the venv with the pinned client libraries",
        py.display(),
        root.display()
    );
    py
}

/// A test CA and a server certificate it signed, as PEM files in `dir`.
pub struct TestCerts {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA certificate (PEM), for clients to trust.
    pub ca_pem: String,
    pub ca_file: PathBuf,
}

/// Generates a CA and a leaf certificate for `names` (DNS names or IP
/// addresses), valid now, written into `dir` as `{tag}-cert.pem` /
/// `{tag}-key.pem`.
pub fn make_certs(dir: &Path, tag: &str, names: &[&str]) -> TestCerts {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("portcullis test CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("portcullis test {tag}"));
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    let cert = dir.join(format!("{tag}-cert.pem"));
    let key = dir.join(format!("{tag}-key.pem"));
    let ca_file = dir.join(format!("{tag}-ca.pem"));
    std::fs::write(&cert, leaf_cert.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    TestCerts {
        cert,
        key,
        ca_pem: ca_cert.pem(),
        ca_file,
    }
}

/// A blocking HTTPS client trusting `ca_pem` only, with TLS 1.2 and 1.3
/// through rustls (aws-lc-rs), HTTP/2 by ALPN when `h2`.
pub fn tls_client(ca_pem: &str, h2: bool) -> reqwest::blocking::Client {
    crypto_provider();
    let b = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20));
    let b = if h2 { b } else { b.http1_only() };
    b.build().unwrap()
}
