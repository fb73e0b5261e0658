//! The request guard over a real store: one credential, verified, with
//! scopes checked.

use crate::common::*;
use http::{HeaderMap, HeaderValue};
use portcullis::auth::guard::{Denied, Guard, Policy};
use portcullis::core::credential::CredentialNames;
use portcullis::core::{ErrorCode, PrincipalKind, Scheme, SchemeSet};

fn policy(schemes: &[Scheme], scope_list: &str) -> Policy {
    Policy {
        schemes: SchemeSet::new(schemes),
        scopes: scopes(scope_list),
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, HeaderValue::from_str(value).unwrap());
    }
    h
}

async fn denied(guard: &Guard, p: &Policy, h: &HeaderMap, q: Option<&str>) -> Denied {
    match guard
        .check(
            p,
            &portcullis::auth::guard::Head::new(&http::Method::GET, h, q),
        )
        .await
    {
        Ok(g) => panic!("expected a denial, got {g:?}"),
        Err(d) => d,
    }
}

async fn setup() -> (Env, Guard, String, String) {
    let env = Env::new().await;
    let created = env.create(&spec("data:read")).await;
    let guard = Guard::new(env.verifier.clone(), CredentialNames::default());
    let key = created.key.expose().to_owned();
    let id = created.record.id.clone();
    (env, guard, key, id)
}

#[tokio::test]
async fn missing_credential_is_401_with_challenges_for_each_scheme() {
    let (_env, guard, _key, _id) = setup().await;
    let d = denied(
        &guard,
        &policy(&[Scheme::ApiKeyHeader], "data:read"),
        &HeaderMap::new(),
        None,
    )
    .await;
    assert_eq!(d.problem.code, ErrorCode::NotAuthenticated);
    assert_eq!(d.problem.status(), 401);
    assert_eq!(d.problem.challenge.as_deref(), Some("APIKey"));
    assert_eq!(d.problem.detail, "Not authenticated");
    assert_eq!(d.credential_id, None);

    let both = policy(&[Scheme::ApiKeyHeader, Scheme::Bearer], "");
    let d = denied(&guard, &both, &HeaderMap::new(), None).await;
    assert_eq!(d.problem.status(), 401);
    assert_eq!(d.problem.challenge.as_deref(), Some("APIKey, Bearer"));

    // A credential of a scheme the route does not accept is not seen.
    let (_, guard2, key, _) = setup().await;
    let d = denied(
        &guard2,
        &policy(&[Scheme::ApiKeyHeader], ""),
        &HeaderMap::new(),
        Some(&format!("api_key={key}")),
    )
    .await;
    assert_eq!(d.problem.code, ErrorCode::NotAuthenticated);
}

#[tokio::test]
async fn two_credentials_are_400() {
    let (_env, guard, key, _id) = setup().await;
    let p = policy(
        &[Scheme::ApiKeyHeader, Scheme::ApiKeyQuery, Scheme::Bearer],
        "",
    );
    let q = format!("api_key={key}");

    let d = denied(&guard, &p, &headers(&[("x-api-key", &key)]), Some(&q)).await;
    assert_eq!(d.problem.code, ErrorCode::AmbiguousCredentials);
    assert_eq!(d.problem.status(), 400);

    let bearer = format!("Bearer {key}");
    let d = denied(
        &guard,
        &p,
        &headers(&[("x-api-key", &key), ("authorization", &bearer)]),
        None,
    )
    .await;
    assert_eq!(d.problem.status(), 400);

    let d = denied(
        &guard,
        &p,
        &headers(&[("x-api-key", &key), ("x-api-key", &key)]),
        None,
    )
    .await;
    assert_eq!(d.problem.status(), 400);
}

#[tokio::test]
async fn a_valid_key_in_header_query_or_bearer_is_granted() {
    let (_env, guard, key, id) = setup().await;
    let cases: Vec<(Scheme, HeaderMap, Option<String>)> = vec![
        (Scheme::ApiKeyHeader, headers(&[("x-api-key", &key)]), None),
        (
            Scheme::ApiKeyQuery,
            HeaderMap::new(),
            Some(format!("a=1&api_key={key}&b=2")),
        ),
        (
            Scheme::ApiKeyCookie,
            headers(&[("cookie", &format!("x=1; api_key={key}"))]),
            None,
        ),
        (
            Scheme::Bearer,
            headers(&[("authorization", &format!("Bearer {key}"))]),
            None,
        ),
    ];
    for (scheme, h, q) in cases {
        let p = policy(&[scheme], "data:read");
        let g = match guard
            .check(
                &p,
                &portcullis::auth::guard::Head::new(&http::Method::GET, &h, q.as_deref()),
            )
            .await
        {
            Ok(g) => g,
            Err(d) => panic!("{scheme}: denied {:?}", d.problem),
        };
        assert_eq!(g.scheme, Some(scheme));
        let who = g.principal.expect("principal");
        assert_eq!(who.subject, "alice");
        assert_eq!(who.kind, PrincipalKind::ApiKey);
        assert_eq!(who.credential_id, id);
        assert!(who.scopes.contains("data:read"));
    }

    // A public route asks for nothing.
    let g = guard
        .check(
            &Policy::public(),
            &portcullis::auth::guard::Head::new(&http::Method::GET, &HeaderMap::new(), None),
        )
        .await
        .unwrap();
    assert!(g.principal.is_none());
}

#[tokio::test]
async fn a_missing_scope_is_403_with_insufficient_scope() {
    let (_env, guard, key, id) = setup().await;
    let p = policy(&[Scheme::ApiKeyHeader], "data:read data:write");
    let d = denied(&guard, &p, &headers(&[("x-api-key", &key)]), None).await;
    assert_eq!(d.problem.code, ErrorCode::InsufficientScope);
    assert_eq!(d.problem.status(), 403);
    let ch = d.problem.challenge.clone().unwrap();
    assert!(ch.contains("insufficient_scope"), "{ch}");
    assert!(ch.contains("scope=\"data:read data:write\""), "{ch}");
    assert_eq!(d.credential_id.as_deref(), Some(id.as_str()));
    assert_eq!(d.scheme, Some(Scheme::ApiKeyHeader));
}

#[tokio::test]
async fn bad_keys_are_one_generic_401_with_the_reason_for_the_log() {
    let (env, guard, key, id) = setup().await;
    let p = policy(&[Scheme::ApiKeyHeader, Scheme::Bearer], "");

    let mut bad = key.clone().into_bytes();
    let n = bad.len() - 1;
    bad[n] = if bad[n] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    let d = denied(&guard, &p, &headers(&[("x-api-key", &bad)]), None).await;
    assert_eq!(d.problem.code, ErrorCode::InvalidCredentials);
    assert_eq!(d.problem.challenge.as_deref(), Some("APIKey"));
    assert_eq!(d.problem.log_reason, "bad_checksum");
    assert_eq!(d.credential_id, None);
    let generic = d.problem.detail.clone();

    let unknown = made_up_key(9);
    let d = denied(
        &guard,
        &p,
        &headers(&[("x-api-key", unknown.expose())]),
        None,
    )
    .await;
    assert_eq!(d.problem.status(), 401);
    assert_eq!(d.problem.log_reason, "unknown_key");
    assert_eq!(d.problem.detail, generic);

    env.keys.revoke("test", &id).await.unwrap();
    let bearer = format!("Bearer {key}");
    let d = denied(&guard, &p, &headers(&[("authorization", &bearer)]), None).await;
    assert_eq!(d.problem.status(), 401);
    assert_eq!(d.problem.log_reason, "key_revoked");
    assert_eq!(
        d.problem.challenge.as_deref(),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(d.credential_id.as_deref(), Some(id.as_str()));
    assert_eq!(d.problem.detail, generic);
    // The body never names the reason or the key.
    let body = d.problem.to_json(None);
    assert!(!body.contains("revoked") && !body.contains(&key), "{body}");

    // A bearer token that is not a key (a JWT, until tokens arrive).
    let d = denied(
        &guard,
        &p,
        &headers(&[("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")]),
        None,
    )
    .await;
    assert_eq!(d.problem.status(), 401);
    assert_eq!(d.problem.log_reason, "unsupported_token");

    // Unreadable header bytes are an invalid credential, not a missing one.
    let mut h = HeaderMap::new();
    h.insert("x-api-key", HeaderValue::from_bytes(b"pc_\xff").unwrap());
    let d = denied(&guard, &p, &h, None).await;
    assert_eq!(d.problem.status(), 401);
    assert_eq!(d.problem.code, ErrorCode::InvalidCredentials);
}

#[tokio::test]
async fn a_store_failure_is_503_not_a_pass_or_a_401() {
    let (env, guard, _key, _id) = setup().await;
    let p = policy(&[Scheme::ApiKeyHeader], "");
    env.hide_keys_table().await;
    let unknown = made_up_key(3);
    let d = denied(
        &guard,
        &p,
        &headers(&[("x-api-key", unknown.expose())]),
        None,
    )
    .await;
    assert_eq!(d.problem.code, ErrorCode::StoreUnavailable);
    assert_eq!(d.problem.status(), 503);
    env.restore_keys_table().await;
}
