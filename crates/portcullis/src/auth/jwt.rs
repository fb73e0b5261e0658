//! JWT access tokens: signing keys, issuing, verifying, and the JWKS.
//!
//! Verification never lets the token choose how it is checked: the key is
//! found by `kid` in a map built from our store (or a trusted issuer's
//! JWKS), and the algorithm is the one that key was configured with. A
//! header naming any other algorithm fails. `jku`, `x5u`, `jwk` and `x5c`
//! are never read, so a token cannot make us fetch or trust anything.
//! After the signature come the claim rules of `portcullis_core::token`,
//! checked against the injected clock.
//!
//! A verified token is cached under the SHA-256 of its text until its
//! `exp`, so a repeated token costs one hash and one lookup.
//!
//! Tokens of other issuers (`TrustedIssuer`, keys from a file, a JWKS URL
//! or OpenID Connect discovery) are routed by their unverified `iss` to
//! that issuer's keys only, so one issuer's `kid` never verifies
//! another's token; see `external` for fetching, caching and staleness.

use crate::clock::SharedClock;
use crate::store::identity::{SigningKeyRow, signing_keys_hash};
use crate::store::{NewAudit, Store, StoreError};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use moka::sync::Cache;
use portcullis_core::token::{
    AccessClaims, ClaimError, Expect, MAX_KID_BYTES, MAX_TOKEN_BYTES, check_claims, check_typ,
};
use portcullis_core::{KeyHash, PrincipalKind, Scopes, Secret};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::external::{Issuer, map_claims, parse_jwks};
pub use super::external::{IssuerHealth, IssuerState, JwksSource, ScopeClaim, TrustedIssuer};

/// The algorithm our tokens are signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    /// Ed25519 (the default).
    EdDSA,
    /// RSA PKCS#1 v1.5 with SHA-256, 3072-bit keys.
    RS256,
    /// HMAC-SHA-256 with a secret from the environment.
    HS256,
}

impl SigningAlg {
    /// Reads a config name.
    pub fn parse(s: &str) -> Option<SigningAlg> {
        match s {
            "EdDSA" => Some(SigningAlg::EdDSA),
            "RS256" => Some(SigningAlg::RS256),
            "HS256" => Some(SigningAlg::HS256),
            _ => None,
        }
    }
    fn jose(self) -> Algorithm {
        match self {
            SigningAlg::EdDSA => Algorithm::EdDSA,
            SigningAlg::RS256 => Algorithm::RS256,
            SigningAlg::HS256 => Algorithm::HS256,
        }
    }
    fn name(self) -> &'static str {
        match self {
            SigningAlg::EdDSA => "EdDSA",
            SigningAlg::RS256 => "RS256",
            SigningAlg::HS256 => "HS256",
        }
    }
}

/// Token settings.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// `iss` of our tokens.
    pub issuer: String,
    /// `aud` of our tokens.
    pub audience: String,
    /// Access-token lifetime, seconds.
    pub access_ttl: i64,
    /// Refresh-family lifetime, seconds.
    pub refresh_ttl: i64,
    /// Signing algorithm.
    pub alg: SigningAlg,
    /// The HS256 secret.
    pub hs_secret: Option<Secret<Vec<u8>>>,
    /// Clock skew allowed, seconds (≤ 60).
    pub leeway: i64,
    /// Other issuers.
    pub trusted: Vec<TrustedIssuer>,
    /// Grant types the token endpoint serves.
    pub grants: Grants,
}

/// Grant types the token endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// `client_credentials`.
    pub client_credentials: bool,
    /// `refresh_token`.
    pub refresh_token: bool,
    /// `password` (RFC 9700 advises against it; off by default).
    pub password: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            client_credentials: true,
            refresh_token: true,
            password: false,
        }
    }
}

impl Grants {
    /// Whether `grant_type` is served.
    pub fn serves(&self, grant_type: &str) -> bool {
        match grant_type {
            "client_credentials" => self.client_credentials,
            "refresh_token" => self.refresh_token,
            "password" => self.password,
            _ => false,
        }
    }
    /// The served grant types, for metadata.
    pub fn names(&self) -> Vec<&'static str> {
        ["client_credentials", "refresh_token", "password"]
            .into_iter()
            .filter(|g| self.serves(g))
            .collect()
    }
}

/// Why a token was refused. The client sees a generic 401; this goes to
/// the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenReject {
    /// Longer than the cap.
    TooLarge,
    /// Not three base64url segments with a JSON header.
    Malformed,
    /// The header names a `crit` extension.
    Critical,
    /// No `kid`, an over-long one, or one we do not know.
    UnknownKid,
    /// The header's `alg` is not the key's.
    WrongAlgorithm,
    /// The signature does not verify, or the claims do not parse.
    BadSignatureOrClaims,
    /// A claim rule failed.
    Claims(ClaimError),
    /// A claim the issuer's settings require is missing.
    MissingClaim,
    /// The subject claim cannot be told to the upstream: over 256 bytes,
    /// or not printable ASCII (a header value).
    BadSubject,
    /// A claim named in the issuer's `allowed_claims` is missing or has a
    /// value not listed.
    ClaimNotAllowed,
    /// The token's issuer has no usable keys (never fetched, or kept past
    /// `stale_for` while the provider is unreachable): answered 503.
    IssuerUnavailable,
}

impl TokenReject {
    /// The reason for the log.
    pub fn reason(self) -> &'static str {
        match self {
            TokenReject::TooLarge => "jwt_too_large",
            TokenReject::Malformed => "jwt_malformed",
            TokenReject::Critical => "jwt_crit",
            TokenReject::UnknownKid => "jwt_unknown_kid",
            TokenReject::WrongAlgorithm => "jwt_wrong_alg",
            TokenReject::BadSignatureOrClaims => "jwt_invalid",
            TokenReject::Claims(c) => c.reason(),
            TokenReject::MissingClaim => "jwt_missing_claim",
            TokenReject::IssuerUnavailable => "jwt_issuer_unavailable",
            TokenReject::BadSubject => "jwt_bad_subject",
            TokenReject::ClaimNotAllowed => "jwt_claim_not_allowed",
        }
    }
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct AccessGrant {
    /// `sub`.
    pub subject: String,
    /// User or client (our tokens), external (a trusted issuer's).
    pub kind: PrincipalKind,
    /// Scopes.
    pub scopes: Scopes,
    /// `jti`, or a short hash of the token when it has none.
    pub token_id: String,
    /// The client it was issued to.
    pub client_id: Option<String>,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// `iss`.
    pub issuer: String,
    /// Issued by us (and so subject to our user and client state).
    pub ours: bool,
}

/// Token failures that are not the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key could not be made or read.
    #[error("signing key error: {0}")]
    Key(&'static str),
    /// A trusted issuer's keys could not be read.
    #[error("trusted issuer {issuer}: {why}")]
    Jwks {
        /// Which issuer.
        issuer: String,
        /// What went wrong.
        why: String,
    },
}

pub(crate) struct VerifyKey {
    alg: Algorithm,
    key: DecodingKey,
}

struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

#[derive(Default)]
struct Keyring {
    signer: Option<Signer>,
    keys: HashMap<String, VerifyKey>,
    jwks: String,
}

/// Issues and verifies access tokens.
pub struct Tokens {
    settings: TokenSettings,
    store: Store,
    clock: SharedClock,
    ring: RwLock<Arc<Keyring>>,
    external: Vec<Arc<Issuer>>,
    verified: Cache<[u8; 32], Arc<AccessGrant>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.settings.issuer)
            .field("alg", &self.settings.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct OutClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: &'a str,
    scope: &'a str,
    client_id: &'a str,
}

/// Reads one DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_inner(pkcs8: &[u8]) -> Option<&[u8]> {
    let (0x30, body, _) = der(pkcs8)? else {
        return None;
    };
    let (0x02, _, rest) = der(body)? else {
        return None;
    };
    let (0x30, _, rest) = der(rest)? else {
        return None;
    };
    let (0x04, inner, _) = der(rest)? else {
        return None;
    };
    Some(inner)
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Makes a fresh signing key: the row to store.
fn generate(alg: SigningAlg, now: i64) -> Result<SigningKeyRow, TokenError> {
    let kid = crate::auth::keys::new_id("").map_err(|_| TokenError::Key("no randomness"))?;
    let (der, jwk) = match alg {
        SigningAlg::EdDSA => {
            let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| TokenError::Key("Ed25519 generation failed"))?;
            let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| TokenError::Key("Ed25519 key unreadable"))?;
            let jwk = serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
                "x": b64(kp.public_key().as_ref()),
            });
            (doc.as_ref().to_vec(), jwk)
        }
        SigningAlg::RS256 => {
            use aws_lc_rs::encoding::AsDer;
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072)
                .map_err(|_| TokenError::Key("RSA generation failed"))?;
            let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
                .map_err(|_| TokenError::Key("RSA key unreadable"))?;
            let pk = kp.public_key();
            let jwk = serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(pk.modulus().big_endian_without_leading_zero()),
                "e": b64(pk.exponent().big_endian_without_leading_zero()),
            });
            (pkcs8.as_ref().to_vec(), jwk)
        }
        SigningAlg::HS256 => return Err(TokenError::Key("HS256 keys are not stored")),
    };
    Ok(SigningKeyRow {
        kid,
        alg: alg.name().to_owned(),
        private_der: der,
        public_jwk: jwk.to_string(),
        created_at: now,
        retired_at: None,
        drop_after: None,
    })
}

/// A verification key from a public JWK (ours or a trusted issuer's).
/// The algorithm comes from the key (its type and curve, or its `alg`),
/// never from a token.
pub(crate) fn verify_key(
    jwk: &serde_json::Value,
    allowed: &[Algorithm],
) -> Option<(String, VerifyKey)> {
    let kid = jwk.get("kid")?.as_str()?.to_owned();
    if kid.is_empty() {
        return None;
    }
    let s = |k: &str| jwk.get(k).and_then(|v| v.as_str());
    let (alg, key) = match s("kty")? {
        "OKP" if s("crv") == Some("Ed25519") => (
            Algorithm::EdDSA,
            DecodingKey::from_ed_components(s("x")?).ok()?,
        ),
        "EC" => {
            let alg = match s("crv")? {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                _ => return None,
            };
            if s("alg").is_some_and(|a| a != alg_name(alg)) {
                return None;
            }
            (alg, DecodingKey::from_ec_components(s("x")?, s("y")?).ok()?)
        }
        "RSA" => {
            let alg = match s("alg") {
                Some(a) => a.parse::<Algorithm>().ok()?,
                None => Algorithm::RS256,
            };
            if !matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) {
                return None;
            }
            // Under 2048 bits a key can be factored by whoever wants it
            // enough; over 8192 only costs us time per token. Refused, so
            // the keys counted as held are keys that protect something.
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&rsa_bits(s("n")?)?) {
                return None;
            }
            (
                alg,
                DecodingKey::from_rsa_components(s("n")?, s("e")?).ok()?,
            )
        }
        _ => return None,
    };
    if !allowed.contains(&alg) || kid.len() > MAX_KID_BYTES {
        return None;
    }
    Some((kid, VerifyKey { alg, key }))
}

fn hs_kid(secret: &[u8]) -> String {
    format!("hs-{}", &KeyHash::of(&b64(secret)).fingerprint())
}

impl Tokens {
    /// Loads (or, on first start, makes) the signing keys and trusted
    /// issuers' keys.
    pub async fn start(
        settings: TokenSettings,
        store: Store,
        clock: SharedClock,
    ) -> Result<Arc<Tokens>, TokenError> {
        let mut external = Vec::new();
        for t in &settings.trusted {
            external.push(Issuer::start(t.clone()).await?);
        }
        let t = Arc::new(Tokens {
            verified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(
                    u64::try_from(settings.access_ttl.max(1)).unwrap_or(900),
                ))
                .build(),
            settings,
            store,
            clock,
            ring: RwLock::new(Arc::new(Keyring::default())),
            external,
        });
        if t.settings.alg != SigningAlg::HS256
            && t.live_keys().await?.iter().all(|k| k.retired_at.is_some())
        {
            let row = generate(t.settings.alg, t.clock.now())?;
            t.store
                .add_signing_key(
                    &row,
                    t.clock.now(),
                    true,
                    &t.audit("signing_key.create", &row.kid),
                )
                .await?;
        }
        t.reload().await?;
        Ok(t)
    }

    fn audit(&self, action: &'static str, kid: &str) -> NewAudit {
        NewAudit {
            at: self.clock.now(),
            actor: "portcullis".into(),
            action,
            target: Some(kid.to_owned()),
            detail: serde_json::json!({ "alg": self.settings.alg.name() }),
        }
    }

    async fn live_keys(&self) -> Result<Vec<SigningKeyRow>, TokenError> {
        let alg = self.settings.alg.name();
        Ok(self
            .store
            .signing_keys(self.clock.now())
            .await?
            .into_iter()
            .filter(|k| k.alg == alg)
            .collect())
    }

    /// The settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Re-reads the signing keys from the store.
    pub async fn reload(&self) -> Result<(), TokenError> {
        let mut ring = Keyring::default();
        let mut jwks = Vec::new();
        if self.settings.alg == SigningAlg::HS256 {
            let secret = self
                .settings
                .hs_secret
                .as_ref()
                .ok_or(TokenError::Key("HS256 needs tokens.secret_env"))?;
            let kid = hs_kid(secret.expose());
            ring.keys.insert(
                kid.clone(),
                VerifyKey {
                    alg: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret.expose()),
                },
            );
            ring.signer = Some(Signer {
                kid,
                alg: Algorithm::HS256,
                key: EncodingKey::from_secret(secret.expose()),
            });
        } else {
            let alg = self.settings.alg.jose();
            for row in self.live_keys().await? {
                let jwk: serde_json::Value = serde_json::from_str(&row.public_jwk)
                    .map_err(|_| TokenError::Key("stored public key unreadable"))?;
                let Some((kid, vk)) = verify_key(&jwk, &[alg]) else {
                    return Err(TokenError::Key("stored public key unusable"));
                };
                if row.retired_at.is_none() && ring.signer.is_none() {
                    let key = match self.settings.alg {
                        SigningAlg::EdDSA => EncodingKey::from_ed_der(&row.private_der),
                        _ => EncodingKey::from_rsa_der(
                            pkcs8_inner(&row.private_der)
                                .ok_or(TokenError::Key("stored RSA key unreadable"))?,
                        ),
                    };
                    ring.signer = Some(Signer {
                        kid: kid.clone(),
                        alg,
                        key,
                    });
                }
                ring.keys.insert(kid, vk);
                jwks.push(jwk);
            }
        }
        ring.jwks = serde_json::json!({ "keys": jwks }).to_string();
        if let Ok(mut w) = self.ring.write() {
            *w = Arc::new(ring);
        }
        Ok(())
    }

    fn ring(&self) -> Arc<Keyring> {
        // A poisoned lock means a writer panicked mid-swap; the Arc inside
        // is still whole, so keep serving it.
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// `/.well-known/jwks.json`.
    pub fn jwks_json(&self) -> String {
        self.ring().jwks.clone()
    }

    /// Makes a new signing key; the old one keeps verifying until the last
    /// token it signed has expired. Returns the new `kid`.
    pub async fn rotate_key(&self, actor: &str) -> Result<String, TokenError> {
        if self.settings.alg == SigningAlg::HS256 {
            return Err(TokenError::Key(
                "HS256 keys come from the environment; change the secret to rotate",
            ));
        }
        let now = self.clock.now();
        let row = generate(self.settings.alg, now)?;
        let mut audit = self.audit("signing_key.rotate", &row.kid);
        audit.actor = actor.to_owned();
        let drop_after = now + self.settings.access_ttl + self.settings.leeway + 1;
        self.store
            .add_signing_key(&row, drop_after, false, &audit)
            .await?;
        self.reload().await?;
        Ok(row.kid)
    }

    /// Drops every cached token verdict (see `Identity::drop_cached`).
    pub fn drop_cached(&self) {
        self.verified.invalidate_all();
    }

    /// Reacts to the change log: reloads keys when a rotation happened
    /// anywhere.
    pub async fn on_changes(&self, changed: &[KeyHash]) {
        let marker = signing_keys_hash();
        if changed.iter().any(|h| h.ct_eq(&marker))
            && let Err(e) = self.reload().await
        {
            tracing::error!(error = %e, "could not reload signing keys");
        }
    }

    /// Issues an access token. Returns the token and its `jti`.
    pub fn issue(
        &self,
        subject: &str,
        scopes: &Scopes,
        client_id: &str,
    ) -> Result<(String, String), TokenError> {
        let ring = self.ring();
        let signer = ring
            .signer
            .as_ref()
            .ok_or(TokenError::Key("no signing key"))?;
        let now = self.clock.now();
        let mut r = [0u8; 16];
        getrandom::fill(&mut r).map_err(|_| TokenError::Key("no randomness"))?;
        let mut jti = String::new();
        portcullis_core::base62::encode_fixed(&r, 22, &mut jti);
        let mut header = Header::new(signer.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(signer.kid.clone());
        let claims = OutClaims {
            iss: &self.settings.issuer,
            sub: subject,
            aud: &self.settings.audience,
            exp: now + self.settings.access_ttl,
            iat: now,
            nbf: now,
            jti: &jti,
            scope: &scopes.to_space_separated(),
            client_id,
        };
        let token = jsonwebtoken::encode(&header, &claims, &signer.key)
            .map_err(|_| TokenError::Key("signing failed"))?;
        Ok((token, jti))
    }

    /// Verifies an access token with the keys held now (no fetch: an
    /// unknown `kid` of a network issuer is refused here; see
    /// [`Tokens::verify_fetching`]).
    pub fn verify(&self, token: &str) -> Result<Arc<AccessGrant>, TokenReject> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenReject::TooLarge);
        }
        let now = self.clock.now();
        let hash = KeyHash::of(token);
        if let Some(g) = self.verified.get(&hash.0) {
            let mut leeway = self.settings.leeway;
            if !g.ours {
                // A cached external verdict ends with its issuer's keys,
                // and with its signing key: a provider that drops a key
                // (compromised, say) must see its tokens refused at the
                // next refetch, not up to access_ttl later.
                let ext = self.external.iter().find(|e| e.cfg.issuer == g.issuer);
                match ext {
                    Some(e) if header_kid(token).is_some_and(|k| e.has_kid(&k)) => {
                        leeway = e.cfg.leeway.unwrap_or(leeway);
                    }
                    Some(e) if e.state() != IssuerState::Unusable => {
                        self.verified.invalidate(&hash.0);
                        return Err(TokenReject::UnknownKid);
                    }
                    _ => return Err(TokenReject::IssuerUnavailable),
                }
            }
            if g.exp > now - leeway.clamp(0, 60) {
                return Ok(g);
            }
            self.verified.invalidate(&hash.0);
            return Err(TokenReject::Claims(ClaimError::Expired));
        }
        let g = Arc::new(self.verify_at(token, now, &hash)?);
        self.verified.insert(hash.0, g.clone());
        Ok(g)
    }

    /// [`Tokens::verify`], and when a trusted issuer's token names a `kid`
    /// its set lacks, one refetch of that issuer's keys (rate-limited per
    /// issuer, shared by concurrent requests) and a second try.
    pub async fn verify_fetching(&self, token: &str) -> Result<Arc<AccessGrant>, TokenReject> {
        // An unusable issuer (keys past stale_for, or never fetched) also
        // refetches, rate-limited the same way: recovery when the provider
        // is back does not wait for the schedule.
        let first = match self.verify(token) {
            Err(r @ (TokenReject::UnknownKid | TokenReject::IssuerUnavailable)) => r,
            other => return other,
        };
        let Some((issuer, kid)) = self.unknown_external(token) else {
            return Err(first);
        };
        if issuer.refetch_for(&kid).await {
            return self.verify(token);
        }
        if issuer.state() == IssuerState::Unusable {
            return Err(TokenReject::IssuerUnavailable);
        }
        Err(TokenReject::UnknownKid)
    }

    /// The trusted issuer a token with an unknown `kid` claims to come
    /// from, and the `kid`.
    fn unknown_external(&self, token: &str) -> Option<(&Arc<Issuer>, String)> {
        let kid = header_kid(token)?;
        let issuer = self.external_for(token.split('.').nth(1)?)?;
        Some((issuer, kid))
    }

    /// The trusted issuer named by a payload's (unverified) `iss`: it only
    /// chooses whose keys are tried; the claims are checked after the
    /// signature.
    fn external_for(&self, payload64: &str) -> Option<&Arc<Issuer>> {
        if self.external.is_empty() {
            return None;
        }
        let iss = unverified_iss(payload64)?;
        self.external.iter().find(|e| e.cfg.issuer == iss)
    }

    /// Each trusted issuer's state (for readiness and metrics).
    pub fn issuers_health(&self) -> Vec<IssuerHealth> {
        self.external.iter().map(|e| e.health()).collect()
    }

    /// Verifies without the cache: the signature and every claim rule,
    /// each time (what a first sight of a token costs).
    pub fn verify_uncached(&self, token: &str) -> Result<AccessGrant, TokenReject> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenReject::TooLarge);
        }
        self.verify_at(token, self.clock.now(), &KeyHash::of(token))
    }

    fn verify_at(&self, token: &str, now: i64, hash: &KeyHash) -> Result<AccessGrant, TokenReject> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenReject::Malformed);
        };
        let raw = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| TokenReject::Malformed)?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&raw).map_err(|_| TokenReject::Malformed)?;
        if header.contains_key("crit") {
            return Err(TokenReject::Critical);
        }
        let alg = header
            .get("alg")
            .and_then(|v| v.as_str())
            .ok_or(TokenReject::Malformed)?;
        let typ = header.get("typ").and_then(|v| v.as_str());
        let kid = header
            .get("kid")
            .and_then(|v| v.as_str())
            .filter(|k| !k.is_empty() && k.len() <= MAX_KID_BYTES);
        let ring = self.ring();
        if let Some(vk) = kid.and_then(|k| ring.keys.get(k)) {
            check_typ(typ).map_err(TokenReject::Claims)?;
            return self.ours(decode(token, alg, vk)?, now, hash);
        }
        let Some(ext) = self.external_for(p64) else {
            check_typ(typ).map_err(TokenReject::Claims)?;
            // Not our key, and not an issuer we trust: say which, for
            // the log, when the token names another issuer.
            return Err(match unverified_iss(p64) {
                Some(iss) if iss != self.settings.issuer => {
                    TokenReject::Claims(ClaimError::WrongIssuer)
                }
                _ => TokenReject::UnknownKid,
            });
        };
        if !typ_allowed(typ, &ext.cfg.typ) {
            return Err(TokenReject::Claims(ClaimError::WrongType));
        }
        let kid = kid.ok_or(TokenReject::UnknownKid)?;
        let claims = ext.with_key(kid, |vk| decode_map(token, alg, vk))?;
        let m = map_claims(&claims, &ext.cfg, self.settings.leeway, now)?;
        Ok(AccessGrant {
            // Never `User` or `Client`: another issuer's "alice" is not
            // our user alice (rate limits, admin, the upstream's view).
            kind: PrincipalKind::External,
            scopes: m.scopes,
            token_id: m
                .jti
                .unwrap_or_else(|| format!("jwt-{}", hash.fingerprint())),
            client_id: m.client_id,
            iat: m.iat,
            exp: m.exp,
            issuer: ext.cfg.issuer.clone(),
            subject: m.subject,
            ours: false,
        })
    }

    /// The claim rules for our own tokens.
    fn ours(
        &self,
        claims: AccessClaims,
        now: i64,
        hash: &KeyHash,
    ) -> Result<AccessGrant, TokenReject> {
        check_claims(
            &claims,
            &Expect {
                issuer: &self.settings.issuer,
                audience: &self.settings.audience,
                leeway: self.settings.leeway,
            },
            now,
        )
        .map_err(TokenReject::Claims)?;
        let scopes = Scopes::parse(claims.scope.as_deref().unwrap_or(""))
            .map_err(|_| TokenReject::BadSignatureOrClaims)?;
        let kind = if claims.client_id.as_deref() == Some(claims.sub.as_str()) {
            PrincipalKind::Client
        } else {
            PrincipalKind::User
        };
        Ok(AccessGrant {
            kind,
            scopes,
            token_id: claims
                .jti
                .clone()
                .unwrap_or_else(|| format!("jwt-{}", hash.fingerprint())),
            client_id: claims.client_id.clone().filter(|c| !c.is_empty()),
            iat: claims.iat.unwrap_or(0),
            exp: claims.exp,
            issuer: claims.iss.clone(),
            subject: claims.sub,
            ours: true,
        })
    }
}

/// The least RSA modulus a key may have, bits.
pub const MIN_RSA_BITS: usize = 2048;
/// The largest.
pub const MAX_RSA_BITS: usize = 8192;

/// An RSA modulus's size in bits (base64url, big-endian).
fn rsa_bits(n64: &str) -> Option<usize> {
    let n = URL_SAFE_NO_PAD.decode(n64).ok()?;
    let i = n.iter().position(|b| *b != 0)?;
    Some((n.len() - i) * 8 - n[i].leading_zeros() as usize)
}

/// A token header's `kid`, unverified (empty or over-long: none).
fn header_kid(token: &str) -> Option<String> {
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?).ok()?;
    let kid = header
        .get("kid")?
        .as_str()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KID_BYTES)?;
    Some(kid.to_owned())
}

/// A payload's `iss`, unverified: only for choosing keys and for the log.
fn unverified_iss(payload64: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let raw = URL_SAFE_NO_PAD.decode(payload64).ok()?;
    serde_json::from_slice::<Iss>(&raw).ok()?.iss
}

/// Whether a header `typ` is one of `allowed` (case-insensitively, the
/// media type's `application/` prefix optional, as RFC 7515 §4.1.9 says).
fn typ_allowed(typ: Option<&str>, allowed: &[String]) -> bool {
    let Some(t) = typ else { return false };
    let bare = |t: &str| -> String {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(t)
    };
    let t = bare(t);
    allowed.iter().any(|a| bare(a) == t)
}

fn decode(token: &str, alg: &str, vk: &VerifyKey) -> Result<AccessClaims, TokenReject> {
    decode_as(token, alg, vk)
}

/// A trusted issuer's claims, as a map for the claim mapping to read.
fn decode_map(
    token: &str,
    alg: &str,
    vk: &VerifyKey,
) -> Result<serde_json::Map<String, serde_json::Value>, TokenReject> {
    decode_as(token, alg, vk)
}

fn decode_as<T: serde::de::DeserializeOwned>(
    token: &str,
    alg: &str,
    vk: &VerifyKey,
) -> Result<T, TokenReject> {
    // The key decides the algorithm; the header must agree with it.
    if alg != alg_name(vk.alg) {
        return Err(TokenReject::WrongAlgorithm);
    }
    let mut v = Validation::new(vk.alg);
    // Time, issuer and audience are checked by check_claims against the
    // injected clock; here only the signature and the claim types.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.leeway = 0;
    jsonwebtoken::decode::<T>(token, &vk.key, &v)
        .map(|d| d.claims)
        .map_err(|_| TokenReject::BadSignatureOrClaims)
}

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // Never equal to a header's alg: an algorithm we cannot name is
        // one we do not accept.
        _ => "\0",
    }
}

/// Reads a trusted issuer's JWKS file as the server will, and counts the
/// keys it accepts (for `config check`). A network source is checked for
/// its settings and its `ca_file` only (0 keys): its keys are fetched at
/// start, and a check fetches nothing.
pub fn check_jwks(t: &TrustedIssuer) -> Result<usize, TokenError> {
    let err = |why: String| TokenError::Jwks {
        issuer: t.issuer.clone(),
        why,
    };
    t.check().map_err(err)?;
    match &t.source {
        JwksSource::File(path) => {
            let text = std::fs::read(path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
            parse_jwks(&text, t).map(|k| k.len()).map_err(err)
        }
        _ => {
            super::jwks_fetch::Fetcher::new(
                t.ca_file.as_deref(),
                t.danger_allow_http,
                t.connect_timeout,
                t.fetch_timeout,
            )
            .map_err(|e| err(e.to_string()))?;
            Ok(0)
        }
    }
}

/// Checks an HS256 secret: at least 32 bytes and not a well-known example.
pub fn check_hs_secret(secret: &[u8]) -> Result<(), &'static str> {
    const KNOWN: &[&str] = &[
        "your-secret-key",
        "secret",
        "changeme",
        "change-me",
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
        "your-256-bit-secret",
        "supersecret",
        "mysecretkey",
    ];
    if KNOWN.iter().any(|k| k.as_bytes() == secret) {
        return Err(
            "the HS256 secret is a well-known example value; generate one with `openssl rand -hex 32`",
        );
    }
    if secret.len() < 32 {
        return Err(
            "the HS256 secret must be at least 32 bytes; generate one with `openssl rand -hex 32`",
        );
    }
    let distinct = {
        let mut seen = [false; 256];
        secret.iter().for_each(|&b| seen[usize::from(b)] = true);
        seen.iter().filter(|s| **s).count()
    };
    if distinct < 8 {
        return Err("the HS256 secret is not random (too few distinct bytes)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_keys_outside_2048_to_8192_bits_are_refused() {
        let n = |bytes: usize, first: u8| {
            let mut v = vec![0u8; bytes];
            v[0] = first;
            v[bytes - 1] = 1;
            b64(&v)
        };
        assert_eq!(rsa_bits(&n(256, 0x80)), Some(2048));
        assert_eq!(rsa_bits(&n(256, 0x01)), Some(2041));
        assert_eq!(rsa_bits(&b64(&[0, 0, 0x80, 1])), Some(16));
        assert_eq!(rsa_bits(&b64(&[0, 0])), None);
        let jwk = |n: String| serde_json::json!({"kty": "RSA", "kid": "k", "n": n, "e": "AQAB"});
        let rs = [Algorithm::RS256];
        assert!(verify_key(&jwk(n(256, 0x80)), &rs).is_some());
        assert!(verify_key(&jwk(n(1024, 0x80)), &rs).is_some());
        for short in [n(128, 0x80), n(256, 0x7f), n(1025, 0x01), n(1, 1)] {
            assert!(verify_key(&jwk(short), &rs).is_none());
        }
    }
}
