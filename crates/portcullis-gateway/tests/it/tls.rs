//! TLS termination: a certificate made in the test (rcgen), TLS 1.2 and
//! 1.3 only, HTTP/2 by ALPN, HSTS on HTTPS answers only, the plain-HTTP
//! listener's redirect and its refusal of credentials, and a SIGHUP that
//! swaps the certificate without dropping an open connection.

use crate::harness::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

struct Tls {
    env: Env,
    redirect_port: u16,
    certs: TestCerts,
}

fn setup() -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "a", &["localhost", "127.0.0.1"]);
    let redirect_port = free_port();
    let env = Env::with_server(
        "trusted_hosts = [\"localhost\", \"127.0.0.1\"]",
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nredirect_http_from = \"127.0.0.1:{redirect_port}\"\n\n[[routes]]\npath = \"/public\"\nupstream = \"demo\"\nauth = []\n\n[[routes]]\npath = \"/data\"\nupstream = \"demo\"\nauth = [\"api_key_header\"]\n",
            path_str(&certs.cert),
            path_str(&certs.key)
        ),
    );
    // The cert files must outlive the test: keep their dir.
    std::mem::forget(dir);
    Tls {
        env,
        redirect_port,
        certs,
    }
}

/// A std rustls client connection to the gateway, trusting `ca_pem`,
/// limited to `versions`.
fn connect(
    port: u16,
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake now, so a refusal shows here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// One keep-alive request on `s`: (status, head, body).
fn request<S: Read + Write>(s: &mut S, path: &str) -> (u16, String, String) {
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed mid-response");
        buf.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(i) = text.find("\r\n\r\n") {
            let head = text[..i].to_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= i + 4 + len {
                let status = head[9..12].parse().unwrap();
                return (status, head, text[i + 4..i + 4 + len].to_owned());
            }
        }
    }
}

#[test]
fn https_versions_alpn_hsts_and_the_plain_listener() {
    let t = setup();
    let env = &t.env;
    env.init();
    let key = env.create_key(&["--name", "k"]);
    let srv = env.serve();
    let https = format!("https://localhost:{}", env.port);

    // HTTP/1.1 and HTTP/2 (by ALPN), HSTS and the security headers.
    for h2 in [false, true] {
        let c = tls_client(&t.certs.ca_pem, h2);
        let r = c.get(format!("{https}/public")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.version(),
            if h2 {
                reqwest::Version::HTTP_2
            } else {
                reqwest::Version::HTTP_11
            }
        );
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=63072000",
            "{:?}",
            r.headers()
        );
        let r = c.get(format!("{https}/healthz")).send().unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let r = c
            .get(format!("{https}/data"))
            .header("x-api-key", &key)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // TLS 1.2 and 1.3 each work; nothing older is offered.
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut s = connect(env.port, &t.certs.ca_pem, &[v]).unwrap();
        assert_eq!(s.conn.protocol_version(), Some(v.version));
        assert_eq!(request(&mut s, "/public").0, 200);
    }
    // A TLS 1.1 ClientHello (no supported_versions extension) gets a fatal
    // alert (rustls says handshake_failure: nothing it offers is shared).
    let mut raw = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(&tls11_client_hello()).unwrap();
    let mut reply = [0u8; 7];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], 0x15, "not an alert: {reply:?}");
    assert_eq!(reply[5], 2, "not fatal: {reply:?}");
    assert!(
        [40, 70].contains(&reply[6]),
        "not a version refusal: {reply:?}"
    );
    // A certificate from another CA is not trusted by clients: sanity.
    let dir = tempfile::tempdir().unwrap();
    let other = make_certs(dir.path(), "other", &["localhost"]);
    assert!(connect(env.port, &other.ca_pem, &[&rustls::version::TLS13]).is_err());

    // The plain listener: navigations redirect (308, path and query kept,
    // no HSTS over HTTP) ...
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(format!(
            "http://localhost:{}/public?x=1&y=2",
            t.redirect_port
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{}/public?x=1&y=2", env.port)
    );
    assert!(r.headers().get("strict-transport-security").is_none());
    // ... a Host outside trusted_hosts is refused, not redirected ...
    let r = plain
        .get(format!("http://127.0.0.1:{}/public", t.redirect_port))
        .header("host", "evil.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    // ... and anything carrying a credential is refused and logged, by key
    // id, as exposed.
    let r = plain
        .get(format!("http://localhost:{}/data", t.redirect_port))
        .header("x-api-key", &key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let b: serde_json::Value = r.json().unwrap();
    assert_eq!(b["code"], "https_required");
    let r = plain
        .post(format!("http://localhost:{}/public", t.redirect_port))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "a POST over HTTP is not redirected");
    // curl agrees.
    let o = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("http://localhost:{}/public", t.redirect_port))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("308 https://localhost:{}/public", env.port)
    );
    let o = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&t.certs.ca_file)
        .arg(format!("https://localhost:{}/public", env.port))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Anyone can see this"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let log = srv.stop();
    let id = key_id_of(&log);
    assert!(
        log.lines()
            .any(|l| l.contains("\"exposed\":true") && l.contains(&id)),
        "no exposure line naming {id}:\n{log}"
    );
    assert!(!log.contains(&key), "the key itself was logged");
}

/// The key id the access log gave the key's successful request.
fn key_id_of(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("portcullis::access") && l.contains("\"path\":\"/data\""))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["key_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .expect("no access line for /data")
}

/// A minimal TLS 1.1 ClientHello: legacy version 3.2, two CBC suites, no
/// extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0x00, 0x00, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, 0x00, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn sighup_swaps_the_certificate_and_keeps_open_connections() {
    let t = setup();
    let env = &t.env;
    env.init();
    let srv = env.serve();
    let mut open = connect(env.port, &t.certs.ca_pem, &[&rustls::version::TLS13]).unwrap();
    assert_eq!(request(&mut open, "/public").0, 200);

    // New CA, new leaf, written over the old files; then SIGHUP.
    let dir = tempfile::tempdir().unwrap();
    let b = make_certs(dir.path(), "b", &["localhost", "127.0.0.1"]);
    std::fs::copy(&b.cert, &t.certs.cert).unwrap();
    std::fs::copy(&b.key, &t.certs.key).unwrap();
    let pid = srv.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        within(Duration::from_secs(10), || srv
            .log()
            .contains("TLS certificate reloaded"))
        .is_some(),
        "{}",
        srv.log()
    );
    // The open connection goes on; new handshakes see the new certificate.
    assert_eq!(request(&mut open, "/public").0, 200);
    assert!(connect(env.port, &t.certs.ca_pem, &[&rustls::version::TLS13]).is_err());
    let mut fresh = connect(env.port, &b.ca_pem, &[&rustls::version::TLS13]).unwrap();
    assert_eq!(request(&mut fresh, "/public").0, 200);

    // A broken file on reload keeps the current certificate.
    std::fs::write(&t.certs.cert, "not a certificate").unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(
        within(Duration::from_secs(10), || srv
            .log()
            .contains("TLS certificate reload failed"))
        .is_some(),
        "{}",
        srv.log()
    );
    let mut again = connect(env.port, &b.ca_pem, &[&rustls::version::TLS13]).unwrap();
    assert_eq!(request(&mut again, "/public").0, 200);
    assert_eq!(request(&mut open, "/public").0, 200);
}

#[test]
fn bad_tls_config_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "c", &["localhost"]);
    let other = make_certs(dir.path(), "d", &["localhost"]);
    let cases = [
        (
            format!(
                "[tls]\ncert = \"/nonexistent.pem\"\nkey = \"{}\"\n",
                path_str(&certs.key)
            ),
            "/nonexistent.pem",
        ),
        (
            // A key that is not the certificate's.
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                path_str(&certs.cert),
                path_str(&other.key)
            ),
            "do not form a usable certificate and key",
        ),
        (
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\nhsts_max_age = \"30d\"\n",
                path_str(&certs.cert),
                path_str(&certs.key)
            ),
            "tls.hsts_max_age",
        ),
    ];
    for (extra, want) in cases {
        let env = Env::new(&extra);
        // `config check` refuses what `serve` would refuse.
        for cmd in [&["serve"][..], &["config", "check"][..]] {
            let o = std::process::Command::new(BIN)
                .args(cmd)
                .arg("--config")
                .arg(env.config())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{cmd:?} {extra}");
            assert!(
                err.contains(want),
                "{cmd:?} {extra}: expected {want:?} in {err}"
            );
            assert!(!err.contains("PRIVATE KEY"), "{err}");
        }
    }
}

#[test]
fn redirect_host_is_written_as_configured_and_basic_over_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path(), "a", &["localhost", "127.0.0.1"]);
    let redirect_port = free_port();
    let env = Env::with_server(
        "trusted_hosts = [\"localhost\", \"127.0.0.1\"]",
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nredirect_http_from = \"127.0.0.1:{redirect_port}\"\nredirect_host = \"api.example.com:8443\"\n\n[[routes]]\npath = \"/public\"\nupstream = \"demo\"\nauth = []\n",
            path_str(&certs.cert),
            path_str(&certs.key)
        ),
    );
    let srv = env.serve();
    let plain = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The public address as written: its port once, the listener's not
    // added.
    let r = plain
        .get(format!("http://localhost:{redirect_port}/public?x=1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        "https://api.example.com:8443/public?x=1"
    );
    // A Basic credential over plain HTTP is refused like any other (its
    // password is not checked: the answer needs no hash).
    let r = plain
        .get(format!("http://localhost:{redirect_port}/public"))
        .basic_auth("alice", Some("hunter2-hunter2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let b: serde_json::Value = r.json().unwrap();
    assert_eq!(b["code"], "https_required");
    let log = srv.stop();
    assert!(
        log.contains("basic:alice"),
        "the exposed Basic credential is named in the log: {log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
}
