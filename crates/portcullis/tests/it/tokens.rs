//! JWT access tokens against an attack corpus minted with our own signing
//! key (so every claim and header rule is reached after a good
//! signature), on an injected clock; key rotation; refresh-token rotation
//! races; password hashing.

use crate::common::{Env, T0};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::auth::jwt::{Grants, SigningAlg, TokenReject, TokenSettings, Tokens};
use portcullis::auth::password::{Passwords, default_params};
use portcullis::core::{KeyHash, PrincipalKind, Scopes, Secret};
use portcullis::store::identity::{RefreshGrant, RefreshOutcome};
use portcullis_core::token::ClaimError;
use serde_json::{Value, json};
use std::sync::Arc;

fn settings(alg: SigningAlg) -> TokenSettings {
    TokenSettings {
        issuer: "http://issuer.test".into(),
        audience: "portcullis".into(),
        access_ttl: 900,
        refresh_ttl: 86_400,
        alg,
        hs_secret: None,
        leeway: 30,
        trusted: Vec::new(),
        grants: Grants::default(),
    }
}

async fn tokens(env: &Env) -> Arc<Tokens> {
    Tokens::start(settings(SigningAlg::EdDSA), env.store.clone(), env.clock())
        .await
        .unwrap()
}

/// Our current signing key, read from the store as an attacker with the
/// key would hold it: (kid, encoding key, public key bytes, public JWK).
async fn our_key(env: &Env) -> (String, EncodingKey, Vec<u8>, String) {
    let rows = env
        .store
        .signing_keys(portcullis::clock::Clock::now(env.clock.as_ref()))
        .await
        .unwrap();
    let row = rows.into_iter().find(|r| r.retired_at.is_none()).unwrap();
    let jwk: Value = serde_json::from_str(&row.public_jwk).unwrap();
    let x = B64.decode(jwk["x"].as_str().unwrap()).unwrap();
    (
        row.kid.clone(),
        EncodingKey::from_ed_der(&row.private_der),
        x,
        row.public_jwk.clone(),
    )
}

fn good_claims() -> Value {
    json!({
        "iss": "http://issuer.test", "sub": "alice", "aud": "portcullis",
        "exp": T0 + 600, "iat": T0, "nbf": T0, "jti": "j1", "scope": "read",
        "client_id": "cl_x",
    })
}

fn sign(key: &EncodingKey, kid: &str, typ: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.typ = typ.map(str::to_owned);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// A token with any header and any signature bytes.
fn raw(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(sig)
    )
}

fn hmac(key: &[u8], msg: &str) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn issued_tokens_verify_and_carry_claims() {
    let env = Env::new().await;
    let t = tokens(&env).await;
    let (tok, jti) = t
        .issue("alice", &Scopes::parse("read write").unwrap(), "cl_app")
        .unwrap();
    let g = t.verify(&tok).unwrap();
    assert_eq!(g.subject, "alice");
    assert_eq!(g.kind, PrincipalKind::User);
    assert_eq!(g.scopes.to_space_separated(), "read write");
    assert_eq!(g.token_id, jti);
    assert!(g.ours);
    // A client_credentials token: sub is the client.
    let (tok, _) = t.issue("cl_app", &Scopes::empty(), "cl_app").unwrap();
    assert_eq!(t.verify(&tok).unwrap().kind, PrincipalKind::Client);
    // The header says at+jwt and names the key.
    let h: Value =
        serde_json::from_slice(&B64.decode(tok.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(h["alg"], "EdDSA");
    assert!(t.jwks_json().contains(h["kid"].as_str().unwrap()));
}

#[tokio::test]
async fn expiry_and_leeway_follow_the_injected_clock_even_when_cached() {
    let env = Env::new().await;
    let t = tokens(&env).await;
    let (tok, _) = t.issue("alice", &Scopes::empty(), "").unwrap();
    assert!(t.verify(&tok).is_ok());
    env.clock.advance(900 + 29);
    assert!(t.verify(&tok).is_ok(), "inside the leeway");
    env.clock.advance(1);
    assert_eq!(
        t.verify(&tok).unwrap_err(),
        TokenReject::Claims(ClaimError::Expired)
    );
}

#[tokio::test]
async fn attack_corpus_signed_with_our_own_key_is_refused() {
    let env = Env::new().await;
    let t = tokens(&env).await;
    let (kid, key, public, jwk_text) = our_key(&env).await;
    let mut cases: Vec<(&str, String, Option<TokenReject>)> = Vec::new();
    let c = good_claims();
    let with = |k: &str, v: Value| {
        let mut c = good_claims();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    use ClaimError as C;
    use TokenReject as R;
    cases.push((
        "typ JWT",
        sign(&key, &kid, Some("JWT"), &c),
        Some(R::Claims(C::WrongType)),
    ));
    cases.push((
        "typ missing",
        sign(&key, &kid, None, &c),
        Some(R::Claims(C::WrongType)),
    ));
    cases.push((
        "typ refresh",
        sign(&key, &kid, Some("rt+jwt"), &c),
        Some(R::Claims(C::WrongType)),
    ));
    let at = Some("at+jwt");
    cases.push((
        "wrong iss",
        sign(&key, &kid, at, &with("iss", json!("http://evil"))),
        Some(R::Claims(C::WrongIssuer)),
    ));
    cases.push((
        "wrong aud",
        sign(&key, &kid, at, &with("aud", json!("other"))),
        Some(R::Claims(C::WrongAudience)),
    ));
    cases.push((
        "aud list without us",
        sign(&key, &kid, at, &with("aud", json!(["a", "b"]))),
        Some(R::Claims(C::WrongAudience)),
    ));
    cases.push((
        "expired",
        sign(&key, &kid, at, &with("exp", json!(T0 - 31))),
        Some(R::Claims(C::Expired)),
    ));
    cases.push((
        "nbf future",
        sign(&key, &kid, at, &with("nbf", json!(T0 + 31))),
        Some(R::Claims(C::NotYetValid)),
    ));
    cases.push((
        "iat future",
        sign(&key, &kid, at, &with("iat", json!(T0 + 3600))),
        Some(R::Claims(C::IssuedInFuture)),
    ));
    cases.push((
        "empty sub",
        sign(&key, &kid, at, &with("sub", json!(""))),
        Some(R::Claims(C::NoSubject)),
    ));
    // Claim-type confusion (CVE-2026-25537): never read as "absent".
    cases.push((
        "exp string",
        sign(&key, &kid, at, &with("exp", json!("never"))),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "nbf string",
        sign(&key, &kid, at, &with("nbf", json!("9999999999"))),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "aud number",
        sign(&key, &kid, at, &with("aud", json!(123))),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "exp float",
        sign(&key, &kid, at, &with("exp", json!(1.5e12))),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "scope array",
        sign(&key, &kid, at, &with("scope", json!(["admin"]))),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "no exp",
        sign(&key, &kid, at, &without("exp")),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "no sub",
        sign(&key, &kid, at, &without("sub")),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "no iss",
        sign(&key, &kid, at, &without("iss")),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "no aud",
        sign(&key, &kid, at, &without("aud")),
        Some(R::BadSignatureOrClaims),
    ));
    // Header tricks.
    let hdr = |extra: Value| {
        let mut h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    for none in ["none", "None", "NONE", "nOnE"] {
        cases.push(("alg none", raw(&hdr(json!({"alg": none})), &c, b""), None));
    }
    let good = sign(&key, &kid, at, &c);
    let good_sig = B64.decode(good.rsplit('.').next().unwrap()).unwrap();
    cases.push((
        "alg none, real sig",
        raw(&hdr(json!({"alg": "none"})), &c, &good_sig),
        None,
    ));
    // HS256 keyed with our public key, in every form an attacker might try.
    for (label, k) in [
        ("hs256 raw public key", public.clone()),
        ("hs256 jwk text", jwk_text.clone().into_bytes()),
        ("hs256 empty key", Vec::new()),
    ] {
        let h = hdr(json!({"alg": "HS256"}));
        let signing = format!(
            "{}.{}",
            B64.encode(h.to_string()),
            B64.encode(c.to_string())
        );
        let sig = hmac(&k, &signing);
        cases.push((
            label,
            format!("{signing}.{}", B64.encode(sig)),
            Some(R::WrongAlgorithm),
        ));
    }
    cases.push((
        "header crit",
        raw(&hdr(json!({"crit": ["exp"]})), &c, &good_sig),
        Some(R::Critical),
    ));
    cases.push((
        "unknown kid",
        sign(&key, "nope", at, &c),
        Some(R::UnknownKid),
    ));
    cases.push((
        "kid traversal",
        sign(&key, "../../../../dev/null", at, &c),
        Some(R::UnknownKid),
    ));
    cases.push((
        "kid sql",
        sign(&key, "' OR 1=1--", at, &c),
        Some(R::UnknownKid),
    ));
    cases.push((
        "kid huge",
        sign(&key, &"k".repeat(5000), at, &c),
        Some(R::UnknownKid),
    ));
    cases.push((
        "kid number",
        raw(&hdr(json!({"kid": 7})), &c, &good_sig),
        Some(R::UnknownKid),
    ));
    // jku / x5u / jwk are never followed or trusted: an attacker-signed
    // token pointing at its own key fails on our key.
    cases.push((
        "embedded jwk",
        raw(
            &hdr(json!({"jwk": {"kty": "OKP", "crv": "Ed25519", "x": B64.encode([1u8; 32])}})),
            &with("scope", json!("admin")),
            &[0u8; 64],
        ),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "jku",
        raw(
            &hdr(json!({"jku": "http://127.0.0.1:1/jwks"})),
            &with("scope", json!("admin")),
            &[0u8; 64],
        ),
        Some(R::BadSignatureOrClaims),
    ));
    // Tampering.
    let parts: Vec<&str> = good.split('.').collect();
    let widened = B64.encode(with("scope", json!("admin")).to_string());
    cases.push((
        "payload altered",
        format!("{}.{}.{}", parts[0], widened, parts[2]),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "empty signature",
        format!("{}.{}.", parts[0], parts[1]),
        Some(R::BadSignatureOrClaims),
    ));
    cases.push((
        "two segments",
        format!("{}.{}", parts[0], parts[1]),
        Some(R::Malformed),
    ));
    cases.push(("four segments", format!("{good}.x"), Some(R::Malformed)));
    cases.push(("trailing dot", format!("{good}."), Some(R::Malformed)));
    cases.push((
        "not base64 header",
        format!("!!.{}.{}", parts[1], parts[2]),
        Some(R::Malformed),
    ));
    cases.push((
        "json serialization",
        json!({"protected": parts[0], "payload": parts[1], "signature": parts[2]}).to_string(),
        Some(R::Malformed),
    ));
    cases.push((
        "refresh token",
        "pcr_0123456789abcdefghijABCDEFGHIJ0123456789abc".into(),
        Some(R::Malformed),
    ));
    cases.push(("api-key shaped", "pc_live_x_y".into(), Some(R::Malformed)));
    let big = sign(&key, &kid, at, &with("pad", json!("x".repeat(9000))));
    cases.push(("oversized", big, Some(R::TooLarge)));

    for (name, tok, want) in &cases {
        let got = t.verify(tok);
        match (got, want) {
            (Ok(_), _) => panic!("{name}: accepted"),
            (Err(e), Some(w)) => assert_eq!(e, *w, "{name}"),
            (Err(_), None) => {}
        }
    }
    // Persistence: the good token still works after all of that.
    assert!(t.verify(&good).is_ok());
}

#[tokio::test]
async fn rotation_keeps_old_tokens_until_they_expire() {
    let env = Env::new().await;
    let t = tokens(&env).await;
    let (old, _) = t.issue("alice", &Scopes::empty(), "").unwrap();
    let new_kid = t.rotate_key("test").await.unwrap();
    let (new, _) = t.issue("alice", &Scopes::empty(), "").unwrap();
    assert!(
        new.split('.')
            .next()
            .map(|h| {
                let v: Value = serde_json::from_slice(&B64.decode(h).unwrap()).unwrap();
                v["kid"] == json!(new_kid)
            })
            .unwrap()
    );
    // A fresh process (no verified-token cache) on the same store.
    let other = tokens(&env).await;
    assert!(other.verify(&old).is_ok(), "old key still published");
    assert!(other.verify(&new).is_ok());
    let jwks: Value = serde_json::from_str(&other.jwks_json()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // Past the last old token's expiry the old key leaves the JWKS.
    env.clock.advance(900 + 30 + 2);
    let later = tokens(&env).await;
    let jwks: Value = serde_json::from_str(&later.jwks_json()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(later.verify(&old).unwrap_err(), TokenReject::UnknownKid);
}

#[tokio::test]
async fn hs256_needs_a_strong_secret_and_publishes_nothing() {
    use portcullis::auth::jwt::check_hs_secret;
    assert!(check_hs_secret(b"your-secret-key").is_err());
    assert!(check_hs_secret(b"short").is_err());
    assert!(check_hs_secret(&[b'a'; 40]).is_err());
    let secret = b"5d1c0e8f2a3b4c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f".to_vec();
    assert!(check_hs_secret(&secret).is_ok());
    let env = Env::new().await;
    let mut s = settings(SigningAlg::HS256);
    s.hs_secret = Some(Secret::new(secret));
    let t = Tokens::start(s, env.store.clone(), env.clock())
        .await
        .unwrap();
    let (tok, _) = t.issue("alice", &Scopes::empty(), "").unwrap();
    assert!(t.verify(&tok).is_ok());
    assert_eq!(t.jwks_json(), r#"{"keys":[]}"#);
}

#[tokio::test]
async fn rs256_keys_sign_and_verify() {
    let env = Env::new().await;
    let t = Tokens::start(settings(SigningAlg::RS256), env.store.clone(), env.clock())
        .await
        .unwrap();
    let (tok, _) = t.issue("alice", &Scopes::empty(), "").unwrap();
    assert!(t.verify(&tok).is_ok());
    let jwks: Value = serde_json::from_str(&t.jwks_json()).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
}

fn grant(family: &str) -> RefreshGrant {
    RefreshGrant {
        family: family.into(),
        client_id: "cl_a".into(),
        subject: "alice".into(),
        kind: "user".into(),
        scopes: Scopes::parse("read write").unwrap(),
        created_at: T0,
        expires_at: T0 + 1000,
    }
}

#[tokio::test]
async fn refresh_rotation_is_atomic_across_processes_and_reuse_burns_the_family() {
    let env = Env::new().await;
    let first = KeyHash::of("pcr_first");
    env.store
        .insert_refresh(&first, &grant("f1"))
        .await
        .unwrap();
    // Eight "gateways" present the same token at once.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = env.other_store().await;
        tasks.push(tokio::spawn(async move {
            store
                .rotate_refresh(
                    &first,
                    &KeyHash::of(&format!("pcr_next{i}")),
                    "cl_a",
                    None,
                    T0 + 1,
                )
                .await
                .unwrap()
        }));
    }
    let mut rotated = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let RefreshOutcome::Rotated(_) = t.await.unwrap() {
            rotated.push(i);
        }
    }
    assert_eq!(rotated.len(), 1, "exactly one rotation wins");
    // The losers were reuse: the whole family, winner's token included, is dead.
    let winner = KeyHash::of(&format!("pcr_next{}", rotated[0]));
    assert_eq!(
        env.store.refresh_grant(&winner, T0 + 2).await.unwrap(),
        None
    );
    assert_eq!(
        env.store
            .rotate_refresh(&winner, &KeyHash::of("pcr_z"), "cl_a", None, T0 + 2)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

#[tokio::test]
async fn refresh_is_bound_to_client_scope_and_expiry() {
    let env = Env::new().await;
    let t = KeyHash::of("pcr_t");
    env.store.insert_refresh(&t, &grant("f2")).await.unwrap();
    let next = KeyHash::of("pcr_u");
    // Another client cannot use it, and cannot burn it either.
    assert_eq!(
        env.store
            .rotate_refresh(&t, &next, "cl_b", None, T0)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    let wider = Scopes::parse("read admin").unwrap();
    assert_eq!(
        env.store
            .rotate_refresh(&t, &next, "cl_a", Some(&wider), T0)
            .await
            .unwrap(),
        RefreshOutcome::ScopeWidened
    );
    let narrower = Scopes::parse("read").unwrap();
    match env
        .store
        .rotate_refresh(&t, &next, "cl_a", Some(&narrower), T0)
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated(g) => assert_eq!(g.scopes.to_space_separated(), "read"),
        other => panic!("{other:?}"),
    }
    // Absolute expiry carries over to the rotated token.
    assert_eq!(
        env.store
            .rotate_refresh(&next, &KeyHash::of("pcr_v"), "cl_a", None, T0 + 1000)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
}

#[tokio::test]
async fn passwords_argon2id_bcrypt_import_and_limits() {
    let p = Passwords::new(default_params(), 2).unwrap();
    let pw = Secret::new("correct horse battery staple".to_owned());
    let h = p.hash(&pw).await.unwrap();
    assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    let ok = p.verify(Some(&h), &pw).await.unwrap();
    assert!(ok.ok && !ok.needs_rehash);
    assert!(
        !p.verify(Some(&h), &Secret::new("wrong".into()))
            .await
            .unwrap()
            .ok
    );
    // passlib's bcrypt hash of "secret": verifies, and asks to be replaced.
    let bc = "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW";
    let r = p
        .verify(Some(bc), &Secret::new("secret".into()))
        .await
        .unwrap();
    assert!(r.ok && r.needs_rehash);
    // 64 characters are fine; over the cap is refused before hashing.
    let long = Secret::new("é".repeat(64));
    assert!(p.hash(&long).await.is_ok());
    assert!(p.hash(&Secret::new("x".repeat(5000))).await.is_err());
    assert!(p.hash(&Secret::new("short".into())).await.is_err());
    // Unknown users and over-long passwords fail like wrong ones.
    assert!(!p.verify(None, &pw).await.unwrap().ok);
    assert!(
        !p.verify(Some(&h), &Secret::new("x".repeat(5000)))
            .await
            .unwrap()
            .ok
    );
    assert!(!format!("{pw:?}").contains("horse"));
}
