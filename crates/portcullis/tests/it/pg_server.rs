//! A private PostgreSQL cluster for the tests: Debian's `postgres`, its
//! own `initdb` in a temp dir, on a free loopback port, as an unprivileged
//! user when the tests run as root (the server refuses root). No system
//! service, no Docker. The gateway's tests use this file too (`#[path]`
//! in their main.rs).
//!
//! [`PgServer::shared`] is one cluster per test binary, on which each test
//! makes its own database ([`PgServer::fresh_db`]); a test that stops or
//! freezes the server starts its own with [`PgServer::start`]. A watchdog
//! shell between the test and the server shuts the server down when the
//! test process exits, even on a panic or a kill, so no cluster outlives
//! its tests.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The role every test connects as.
pub const PG_USER: &str = "portcullis";
/// Its password (the cluster asks for it: scram-sha-256 on TCP).
pub const PG_PASSWORD: &str = "pg-test-secret";

/// A running (or stopped) private PostgreSQL cluster.
pub struct PgServer {
    /// With TLS: the CA file that signed the server's certificate (for
    /// `sslrootcert`); the server then refuses connections without TLS.
    pub tls_ca: Option<PathBuf>,
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    run_as: Option<String>,
    child: Option<Child>,
    /// The watchdog deletes the cluster's directory once postgres has
    /// exited: the shared cluster lives in a static that is never dropped,
    /// so its `TempDir` would never delete it.
    reap: bool,
}

/// Where Debian puts the server binaries (not on PATH): the newest
/// `/usr/lib/postgresql/N/bin`, or a failure that says how to get it.
fn pg_bin() -> PathBuf {
    if let Some(d) = std::env::var_os("PORTCULLIS_PG_BIN") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed: run scripts/install-test-deps.sh (as root) to install \
             Debian's postgresql; the Postgres store tests need a real server"
        )
    })
}

pub use crate::ports::free_port;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The unprivileged user the server runs as when we are root: Debian's
/// `postgres` (made by the package), else `nobody`.
fn unprivileged_user() -> String {
    let ok = |u: &str| {
        Command::new("id")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ["postgres", "nobody"]
        .into_iter()
        .find(|u| ok(u))
        .expect("no unprivileged user (postgres or nobody) to run PostgreSQL as")
        .to_owned()
}

static SHARED: OnceLock<PgServer> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(0);

impl PgServer {
    /// The test binary's one shared cluster, started on first use.
    pub fn shared() -> &'static PgServer {
        SHARED.get_or_init(|| {
            let mut s = PgServer::start();
            // Restarted with the reaping watchdog (stopping it deletes
            // nothing: only the watchdog's end does).
            s.reap = true;
            s.start_again();
            s
        })
    }

    /// Starts a cluster of its own (for tests that stop or freeze it).
    pub fn start() -> PgServer {
        PgServer::launch(false)
    }

    /// Starts a cluster that takes TCP connections over TLS only, with a
    /// certificate for `localhost` and `127.0.0.1` from a fresh test CA
    /// (`tls_ca`).
    pub fn start_tls() -> PgServer {
        PgServer::launch(true)
    }

    fn launch(tls: bool) -> PgServer {
        let run_as = is_root().then(unprivileged_user);
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()
            .unwrap();
        let mut s = PgServer {
            tls_ca: None,
            bin: pg_bin(),
            dir,
            port: 0,
            run_as,
            child: None,
            reap: false,
        };
        s.initdb();
        if tls {
            s.enable_tls();
        }
        for attempt in 0..5 {
            s.port = free_port();
            if s.spawn() {
                return s;
            }
            eprintln!(
                "postgres did not start on port {} (attempt {attempt})",
                s.port
            );
        }
        panic!("postgres did not start: {}", s.log());
    }

    /// Runs `cmd` as the unprivileged user (when we are root).
    fn command(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={}", group_of(u)))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn initdb(&self) {
        if let Some(u) = &self.run_as {
            let ok = Command::new("chown")
                .arg(format!("{u}:{}", group_of(u)))
                .arg(self.dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown of the Postgres temp dir failed");
        }
        let pwfile = self.dir.path().join("pwfile");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        if let Some(u) = &self.run_as {
            let _ = Command::new("chown").arg(u).arg(&pwfile).status();
        }
        let out = self
            .command(&self.bin.join("initdb"))
            .arg("-D")
            .arg(self.data())
            .args(["-U", PG_USER, "-E", "UTF8", "--no-sync", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a CA and a server certificate, turns `ssl` on, and makes
    /// TCP connections without TLS refused (`hostnossl … reject`).
    fn enable_tls(&mut self) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "portcullis test Postgres CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let data = self.data();
        std::fs::write(data.join("server.crt"), leaf_cert.pem()).unwrap();
        std::fs::write(data.join("server.key"), leaf_key.serialize_pem()).unwrap();
        let ca_file = self.dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let key = data.join("server.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        if let Some(u) = &self.run_as {
            for f in ["server.crt", "server.key"] {
                let _ = Command::new("chown").arg(u).arg(data.join(f)).status();
            }
        }
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        self.tls_ca = Some(ca_file);
    }

    /// `postgres://portcullis:…@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// The port it listens on (the same after `start_again`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes an empty database and returns its URL.
    pub fn fresh_db(&self) -> String {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs one SQL command with `psql` (over TCP, with the password).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", PG_USER, "-d", db, "-c", sql])
            .env("PGPASSWORD", PG_PASSWORD)
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Everything the server printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Stops the server as an operator's fast shutdown would (SIGINT:
    /// sessions are cut, nothing more is answered) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Closing the watchdog's stdin makes it shut postgres down.
            drop(c.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again on the same port, with its data.
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "postgres did not start again on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Spawns the watchdog and postgres, and waits until it takes
    /// connections; false when it exited (e.g. the port was taken).
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        let sock = self.dir.path().to_path_buf();
        let server = self.command(&self.bin.join("postgres"));
        let mut argv: Vec<String> = std::iter::once(server.get_program())
            .chain(server.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        argv.extend([
            "-D".into(),
            self.data().display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            sock.display().to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "synchronous_commit=off".into(),
            "-c".into(),
            "full_page_writes=off".into(),
            "-c".into(),
            "max_connections=300".into(),
            "-c".into(),
            "shared_buffers=64MB".into(),
        ]);
        // The watchdog: runs postgres, and when its stdin closes (we
        // stopped it, or this process exited however it did) asks
        // postgres for a fast shutdown and waits for it.
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" & p=$!; trap 'kill -INT $p 2>/dev/null' EXIT; while read -r _; do :; done; kill -INT $p 2>/dev/null; wait $p; if [ -n "$REAP_DIR" ]; then rm -rf "$REAP_DIR"; fi"#)
            .arg("sh")
            .env(
                "REAP_DIR",
                if self.reap {
                    self.dir.path().as_os_str()
                } else {
                    std::ffi::OsStr::new("")
                },
            )
            .args(&argv)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run postgres: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ready() {
                return true;
            }
            if let Some(c) = self.child.as_mut()
                && c.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "postgres on port {} never took connections (30 s): {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server takes connections (`pg_isready`).
    fn ready(&self) -> bool {
        if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            return false;
        }
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The primary group of `user`.
fn group_of(user: &str) -> String {
    let out = Command::new("id").args(["-gn", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
