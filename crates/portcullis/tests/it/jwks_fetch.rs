//! Trusted issuers' keys over the network, against a TLS server whose
//! answers the test chooses (a provider gone wrong, or posing as one):
//! redirects, oversized and slow answers, untrusted certificates and plain
//! HTTP are refused; a JWKS with bad keys among good ones serves the good
//! ones; a rotation costs one refetch and made-up kids none; a discovery
//! document naming another issuer is not believed.

use crate::common::{Env, T0};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::auth::jwks_fetch::{FetchError, Fetcher};
use portcullis::auth::jwt::TrustedIssuer;
use portcullis::auth::jwt::{Grants, IssuerState, SigningAlg, TokenReject, TokenSettings, Tokens};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server answers, by path: a whole raw HTTP response, or
/// `None` to hold the connection without answering.
type Routes = Arc<Mutex<HashMap<String, Option<Vec<u8>>>>>;

struct Canned {
    base: String,
    ca: PathBuf,
    routes: Routes,
    hits: Arc<Mutex<Vec<String>>>,
    /// How long the server waits before answering (a slow provider).
    delay: Arc<Mutex<Duration>>,
    _dir: tempfile::TempDir,
}

impl Canned {
    fn answer(&self, path: &str, resp: Option<Vec<u8>>) {
        self.routes.lock().unwrap().insert(path.to_owned(), resp);
    }
    fn json(&self, path: &str, v: &Value) {
        let body = v.to_string();
        self.answer(
            path,
            Some(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=42\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            ),
        );
    }
    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

/// A TLS server on loopback with a certificate from a CA of its own.
async fn canned() -> Canned {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let routes: Routes = Arc::default();
    let hits: Arc<Mutex<Vec<String>>> = Arc::default();
    let delay: Arc<Mutex<Duration>> = Arc::default();
    let (r, h, d) = (routes.clone(), hits.clone(), delay.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, routes, hits, delay) =
                (acceptor.clone(), r.clone(), h.clone(), d.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                hits.lock().unwrap().push(path.clone());
                let resp = routes.lock().unwrap().get(&path).cloned();
                let wait = *delay.lock().unwrap();
                tokio::time::sleep(wait).await;
                match resp {
                    Some(Some(bytes)) => {
                        let _ = tls.write_all(&bytes).await;
                        let _ = tls.shutdown().await;
                    }
                    // Hold the connection, never answering.
                    Some(None) => tokio::time::sleep(Duration::from_secs(3600)).await,
                    None => {
                        let _ = tls
                            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    Canned {
        base: format!("https://127.0.0.1:{port}"),
        ca: ca_path,
        routes,
        hits,
        delay,
        _dir: dir,
    }
}

fn fetcher(ca: Option<&std::path::Path>) -> Fetcher {
    Fetcher::new(ca, false, Duration::from_secs(5), Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn fetches_refuse_redirects_big_slow_untrusted_and_plain() {
    let s = canned().await;
    let f = fetcher(Some(&s.ca));
    s.json("/jwks", &json!({"keys": []}));
    let got = f.get(&format!("{}/jwks", s.base)).await.unwrap();
    assert_eq!(&got.body[..], br#"{"keys":[]}"#);
    assert_eq!(got.max_age, Some(Duration::from_secs(42)));

    s.answer(
        "/moved",
        Some(b"HTTP/1.1 302 Found\r\nlocation: /jwks\r\ncontent-length: 0\r\n\r\n".to_vec()),
    );
    let before = s.hits("/jwks");
    assert!(matches!(
        f.get(&format!("{}/moved", s.base)).await,
        Err(FetchError::Redirect(302))
    ));
    assert_eq!(s.hits("/jwks"), before, "the redirect was followed");

    let big = vec![b'x'; 300 * 1024];
    let mut declared =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", big.len()).into_bytes();
    declared.extend_from_slice(&big);
    s.answer("/big", Some(declared));
    assert!(matches!(
        f.get(&format!("{}/big", s.base)).await,
        Err(FetchError::TooLarge)
    ));
    // No length: read until the cap, not until the server stops.
    let mut undeclared = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
    undeclared.extend_from_slice(&big);
    s.answer("/big-stream", Some(undeclared));
    assert!(matches!(
        f.get(&format!("{}/big-stream", s.base)).await,
        Err(FetchError::TooLarge)
    ));

    s.answer(
        "/err",
        Some(b"HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n".to_vec()),
    );
    assert!(matches!(
        f.get(&format!("{}/err", s.base)).await,
        Err(FetchError::Status(500))
    ));

    s.answer("/slow", None);
    assert!(matches!(
        f.get(&format!("{}/slow", s.base)).await,
        Err(FetchError::Timeout(_))
    ));

    // The public roots do not know the test CA.
    let public = fetcher(None);
    assert!(matches!(
        public.get(&format!("{}/jwks", s.base)).await,
        Err(FetchError::Tls(_))
    ));
    // Plain HTTP: refused before connecting.
    let plain = s.base.replacen("https://", "http://", 1);
    let n = s.hits.lock().unwrap().len();
    assert!(matches!(
        f.get(&format!("{plain}/jwks")).await,
        Err(FetchError::Url(_))
    ));
    assert_eq!(s.hits.lock().unwrap().len(), n);
}

fn settings(trusted: TrustedIssuer) -> TokenSettings {
    TokenSettings {
        issuer: "http://own.test".into(),
        audience: "portcullis".into(),
        access_ttl: 900,
        refresh_ttl: 86_400,
        alg: SigningAlg::EdDSA,
        hs_secret: None,
        leeway: 30,
        trusted: vec![trusted],
        grants: Grants::default(),
    }
}

/// An Ed25519 key: (its JWK under `kid`, the key to sign with).
fn ed_key(kid: &str) -> (Value, EncodingKey) {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
    use base64::Engine;
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key().as_ref());
    (
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "x": x}),
        EncodingKey::from_ed_der(doc.as_ref()),
    )
}

fn token(key: &EncodingKey, kid: &str, iss: &str) -> String {
    token_with(key, kid, iss, json!({}))
}

/// A token with `extra` claims added to (or replacing) the usual ones.
fn token_with(key: &EncodingKey, kid: &str, iss: &str, extra: Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.to_owned());
    h.typ = Some("at+jwt".into());
    let mut claims = json!({"iss": iss, "sub": "svc", "aud": ["other", "api"], "exp": T0 + 600,
        "iat": T0, "scope": "a b", "client_id": "svc"});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

/// A network issuer of `s`'s `/jwks` whose unknown-kid refetch is allowed
/// once an hour (so a test never sees a second one by waiting).
async fn hourly(env: &Env, s: &Canned) -> Arc<Tokens> {
    let trusted = TrustedIssuer::jwks_url("https://issuer.test", &format!("{}/jwks", s.base))
        .audience("api")
        .algorithms(&[Algorithm::EdDSA])
        .ca_file(&s.ca)
        .kid_refetch_interval(Duration::from_secs(3600));
    Tokens::start(settings(trusted), env.store.clone(), env.clock())
        .await
        .unwrap()
}

/// A client that hangs up while its request's unknown-kid refetch is
/// under way does not cancel the fetch: the rotated key still arrives
/// (else one made-up kid per interval from clients that disconnect
/// would keep it out until the scheduled refresh).
#[tokio::test]
async fn a_cancelled_request_does_not_cancel_its_refetch() {
    let env = Env::new().await;
    let s = canned().await;
    let (k1, _) = ed_key("k1");
    s.json("/jwks", &json!({"keys": [k1]}));
    let t = hourly(&env, &s).await;
    let (k2, sign2) = ed_key("k2");
    s.json("/jwks", &json!({"keys": [k1, k2]}));
    *s.delay.lock().unwrap() = Duration::from_millis(500);
    let tok = token(&sign2, "k2", "https://issuer.test");
    // The caller gives up long before the provider answers.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), t.verify_fetching(&tok))
            .await
            .is_err()
    );
    // The interval is spent, yet the fetch it paid for lands.
    let g = t.verify_fetching(&tok).await.unwrap();
    assert_eq!(g.subject, "svc");
    assert_eq!(s.hits("/jwks"), 2);
}

/// A verdict cached for a token ends when its signing key leaves the
/// issuer's set, not at the end of access_ttl.
#[tokio::test]
async fn a_cached_verdict_ends_with_its_key() {
    let env = Env::new().await;
    let s = canned().await;
    let (k1, sign1) = ed_key("k1");
    s.json("/jwks", &json!({"keys": [k1]}));
    let t = hourly(&env, &s).await;
    let old = token(&sign1, "k1", "https://issuer.test");
    t.verify_fetching(&old).await.unwrap();
    t.verify_fetching(&old).await.unwrap();
    // The provider drops k1 (compromised, say) and signs with k2.
    let (k2, sign2) = ed_key("k2");
    s.json("/jwks", &json!({"keys": [k2]}));
    t.verify_fetching(&token(&sign2, "k2", "https://issuer.test"))
        .await
        .unwrap();
    assert_eq!(s.hits("/jwks"), 2);
    assert!(matches!(
        t.verify_fetching(&old).await,
        Err(TokenReject::UnknownKid)
    ));
}

#[tokio::test]
async fn a_jwks_url_with_bad_keys_rotation_and_made_up_kids() {
    let env = Env::new().await;
    let s = canned().await;
    let (k1, sign1) = ed_key("k1");
    s.json(
        "/jwks",
        &json!({"keys": [
            {"kty": "oct", "kid": "hs", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
            {"kty": "RSA", "kid": "junk", "n": "!!", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "AAAA"},
            "a string",
            k1,
        ]}),
    );
    let trusted = TrustedIssuer::jwks_url("https://issuer.test", &format!("{}/jwks", s.base))
        .audience("api")
        .algorithms(&[Algorithm::EdDSA])
        .ca_file(&s.ca)
        .kid_refetch_interval(Duration::from_secs(3600));
    let t = Tokens::start(settings(trusted), env.store.clone(), env.clock())
        .await
        .unwrap();
    let g = t
        .verify_fetching(&token(&sign1, "k1", "https://issuer.test"))
        .await
        .unwrap();
    assert_eq!((g.subject.as_str(), g.ours), ("svc", false));
    assert_eq!(g.scopes.to_space_separated(), "a b");
    let h = &t.issuers_health()[0];
    assert_eq!(
        (h.state, h.keys),
        (IssuerState::Fresh, 1),
        "only the good key kept"
    );
    assert_eq!(s.hits("/jwks"), 1);

    // Rotation at the provider: the new kid costs one refetch, shared by
    // every request that carries it at once.
    let (k2, sign2) = ed_key("k2");
    s.json("/jwks", &json!({"keys": [k2]}));
    let new: Vec<String> = (0..16)
        .map(|_| token(&sign2, "k2", "https://issuer.test"))
        .collect();
    let results =
        futures_util::future::join_all(new.iter().map(|tok| t.verify_fetching(tok))).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
    );
    assert_eq!(s.hits("/jwks"), 2);

    // Made-up kids, concurrently: no fetch (the interval is spent).
    let fake: Vec<String> = (0..32)
        .map(|n| token(&sign2, &format!("made-up-{n}"), "https://issuer.test"))
        .collect();
    let results =
        futures_util::future::join_all(fake.iter().map(|tok| t.verify_fetching(tok))).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(TokenReject::UnknownKid)))
    );
    // A token claiming another issuer never reaches anyone's keys.
    assert!(matches!(
        t.verify_fetching(&token(&sign2, "k2", "https://evil.test"))
            .await,
        Err(TokenReject::Claims(
            portcullis_core::token::ClaimError::WrongIssuer
        ))
    ));
    assert_eq!(s.hits("/jwks"), 2);
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_not_believed() {
    let env = Env::new().await;
    let s = canned().await;
    let (k1, sign1) = ed_key("k1");
    s.json("/jwks", &json!({"keys": [k1]}));
    s.json(
        "/.well-known/openid-configuration",
        &json!({"issuer": "https://evil.test", "jwks_uri": format!("{}/jwks", s.base)}),
    );
    let trusted = TrustedIssuer::discover(&s.base)
        .audience("api")
        .algorithms(&[Algorithm::EdDSA])
        .ca_file(&s.ca);
    // Starts (the provider may be fixed later) but trusts nothing.
    let t = Tokens::start(settings(trusted), env.store.clone(), env.clock())
        .await
        .unwrap();
    let h = &t.issuers_health()[0];
    assert_eq!(h.state, IssuerState::Unusable);
    assert!(
        h.last_error
            .as_deref()
            .unwrap_or("")
            .contains("not the configured one"),
        "{h:?}"
    );
    assert!(matches!(
        t.verify_fetching(&token(&sign1, "k1", &s.base)).await,
        Err(TokenReject::IssuerUnavailable)
    ));
    assert_eq!(
        s.hits("/jwks"),
        0,
        "keys fetched from a document naming another issuer"
    );
}

/// A trusted issuer's token is an `external` principal: never our user
/// or client (even when its `client_id` equals its `sub`), and never an
/// administrator, whatever scopes it carries.
#[tokio::test]
async fn an_external_admin_scope_opens_no_admin_api() {
    use axum::body::Body;
    use portcullis::admin::{AdminState, router};
    use portcullis::auth::guard::Guard;
    use portcullis::core::credential::CredentialNames;
    use portcullis_core::PrincipalKind;
    use tower::ServiceExt;

    let env = Env::new().await;
    let s = canned().await;
    let (k1, sign1) = ed_key("k1");
    s.json("/jwks", &json!({"keys": [k1]}));
    let trusted = TrustedIssuer::jwks_url("https://issuer.test", &format!("{}/jwks", s.base))
        .audience("api")
        .algorithms(&[Algorithm::EdDSA])
        .ca_file(&s.ca);
    let identity = portcullis::service::start_identity(
        &env.store,
        env.clock(),
        settings(trusted),
        Default::default(),
        Default::default(),
        1,
        Some(&env.verifier),
    )
    .await
    .unwrap();
    let tok = token_with(
        &sign1,
        "k1",
        "https://issuer.test",
        json!({"scope": "admin"}),
    );
    let p = identity.verify_access_token(&tok).await.unwrap().unwrap();
    assert_eq!(p.kind, PrincipalKind::External);
    assert_eq!(p.issuer.as_deref(), Some("https://issuer.test"));
    assert_eq!(p.scopes.to_space_separated(), "admin");

    let app = router(AdminState {
        keys: env.keys.clone(),
        guard: Guard::new(env.verifier.clone(), CredentialNames::default())
            .with_identity(identity.clone()),
        identity: Some(identity),
        limiter: None,
    });
    let r = app
        .oneshot(
            http::Request::get("/admin/v1/stats")
                .header("authorization", format!("Bearer {tok}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

/// An issuer whose keys are unusable (the provider was unreachable at
/// start) recovers at the first request once the provider is back, not at
/// the next scheduled retry: the request causes the rate-limited refetch.
#[tokio::test]
async fn an_unusable_issuer_refetches_on_demand() {
    let env = Env::new().await;
    let s = canned().await;
    // No JWKS yet: the start's fetch gets 404.
    let t = hourly(&env, &s).await;
    assert_eq!(t.issuers_health()[0].state, IssuerState::Unusable);
    let (k1, sign1) = ed_key("k1");
    s.json("/jwks", &json!({"keys": [k1]}));
    let g = t
        .verify_fetching(&token(&sign1, "k1", "https://issuer.test"))
        .await
        .unwrap();
    assert_eq!(g.subject, "svc");
    assert_eq!(t.issuers_health()[0].state, IssuerState::Fresh);
}
