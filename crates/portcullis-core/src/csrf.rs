//! CSRF decisions for cookie-carried credentials.
//!
//! Two checks, in order (OWASP CSRF cheat sheet):
//! 1. Fetch Metadata, or `Origin` when a browser sends no `Sec-Fetch-Site`:
//!    an unsafe request from another site is refused outright.
//! 2. A signed double-submit token: `X-CSRF-Token` must carry a token
//!    whose HMAC binds it to this session (or cookie key), so a token
//!    planted from a sibling subdomain, taken from another session, or
//!    altered does not verify. The token also sits in a readable cookie
//!    so a page's script can copy it into the header.

use crate::base62;
use crate::key::KeyHash;
use hmac::{Hmac, Mac};
use http::{HeaderMap, Method};
use sha2::Sha256;

/// The header the token is sent in.
pub const HEADER: &str = "x-csrf-token";

/// Random bytes in a token.
pub const RANDOM_BYTES: usize = 16;

/// Methods that may change state and so need the checks.
pub fn is_unsafe(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Why a request failed the CSRF checks. All answer 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfError {
    /// `Sec-Fetch-Site` says another site sent it.
    CrossSite,
    /// `Origin` names an origin that is neither ours nor trusted.
    ForeignOrigin,
    /// No `X-CSRF-Token`.
    MissingToken,
    /// The token does not verify for this credential.
    BadToken,
}

impl CsrfError {
    /// The reason for the log.
    pub fn reason(self) -> &'static str {
        match self {
            CsrfError::CrossSite => "csrf_cross_site",
            CsrfError::ForeignOrigin => "csrf_foreign_origin",
            CsrfError::MissingToken => "csrf_token_missing",
            CsrfError::BadToken => "csrf_token_invalid",
        }
    }
    /// The detail for the client.
    pub fn detail(self) -> &'static str {
        match self {
            CsrfError::CrossSite | CsrfError::ForeignOrigin => {
                "Cross-site request refused (CSRF protection)"
            }
            CsrfError::MissingToken => "Missing X-CSRF-Token header (CSRF protection)",
            CsrfError::BadToken => "Invalid X-CSRF-Token (CSRF protection)",
        }
    }
}

/// Step 1: where the request came from. `own_origin` is the origin the
/// gateway is reached at (`https://api.example.com`), from the request's
/// Host; `trusted` are further origins allowed to send unsafe requests.
pub fn check_origin(
    headers: &HeaderMap,
    own_origin: Option<&str>,
    trusted: &[String],
) -> Result<(), CsrfError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => Ok(()),
            // same-site counts as foreign: a sibling subdomain is not us.
            _ => Err(CsrfError::CrossSite),
        };
    }
    let mut origins = headers.get_all(http::header::ORIGIN).iter();
    let Some(origin) = origins.next() else {
        // No browser signals at all: an old browser or a non-browser
        // client. The token check still applies.
        return Ok(());
    };
    if origins.next().is_some() {
        return Err(CsrfError::ForeignOrigin);
    }
    let Ok(origin) = origin.to_str() else {
        return Err(CsrfError::ForeignOrigin);
    };
    let ok = own_origin.is_some_and(|o| o.eq_ignore_ascii_case(origin))
        || trusted.iter().any(|t| t.eq_ignore_ascii_case(origin));
    if ok {
        Ok(())
    } else {
        Err(CsrfError::ForeignOrigin)
    }
}

fn tag(key: &[u8], binding: &KeyHash, random: &str) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    // Length-prefixed fields: no two (binding, random) pairs share input.
    m.update(b"portcullis-csrf-v1\0");
    m.update(&binding.0);
    m.update(&(random.len() as u32).to_be_bytes());
    m.update(random.as_bytes());
    Some(m)
}

/// A token bound to `binding` (the hash of the session or cookie key).
pub fn issue(key: &[u8], binding: &KeyHash, random: &[u8; RANDOM_BYTES]) -> String {
    let mut r = String::new();
    base62::encode_fixed(random, 22, &mut r);
    let mac = tag(key, binding, &r)
        .map(|m| m.finalize().into_bytes())
        .unwrap_or_default();
    let mut out = r;
    out.push('.');
    for b in mac {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Step 2: the header token verifies for `binding`, in constant time.
pub fn verify(key: &[u8], binding: &KeyHash, token: Option<&str>) -> Result<(), CsrfError> {
    let token = token.ok_or(CsrfError::MissingToken)?;
    let (random, mac_hex) = token.split_once('.').ok_or(CsrfError::BadToken)?;
    if random.len() != 22 || mac_hex.len() != 64 || !base62::is_base62(random.as_bytes()) {
        return Err(CsrfError::BadToken);
    }
    let mut mac = [0u8; 32];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = u8::from_str_radix(
            mac_hex.get(i * 2..i * 2 + 2).ok_or(CsrfError::BadToken)?,
            16,
        )
        .map_err(|_| CsrfError::BadToken)?;
    }
    let m = tag(key, binding, random).ok_or(CsrfError::BadToken)?;
    m.verify_slice(&mac).map_err(|_| CsrfError::BadToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn token_binds_to_session_and_key() {
        let k = [1u8; 32];
        let s1 = KeyHash::of("session-one");
        let s2 = KeyHash::of("session-two");
        let t = issue(&k, &s1, &[9u8; 16]);
        assert!(verify(&k, &s1, Some(&t)).is_ok());
        assert_eq!(verify(&k, &s2, Some(&t)), Err(CsrfError::BadToken));
        assert_eq!(verify(&[2u8; 32], &s1, Some(&t)), Err(CsrfError::BadToken));
        let mut altered = t.clone();
        altered.pop();
        altered.push(if t.ends_with('0') { '1' } else { '0' });
        assert_eq!(verify(&k, &s1, Some(&altered)), Err(CsrfError::BadToken));
        assert_eq!(verify(&k, &s1, None), Err(CsrfError::MissingToken));
        assert_eq!(verify(&k, &s1, Some("x.y")), Err(CsrfError::BadToken));
        assert_eq!(verify(&k, &s1, Some("é")), Err(CsrfError::BadToken));
    }

    #[test]
    fn origin_rules() {
        let own = Some("http://api.test");
        let mut h = HeaderMap::new();
        assert!(check_origin(&h, own, &[]).is_ok());
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert_eq!(check_origin(&h, own, &[]), Err(CsrfError::CrossSite));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert_eq!(check_origin(&h, own, &[]), Err(CsrfError::CrossSite));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_origin(&h, own, &[]).is_ok());
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_static("http://evil.test"));
        assert_eq!(check_origin(&h, own, &[]), Err(CsrfError::ForeignOrigin));
        assert!(check_origin(&h, own, &["http://evil.test".into()]).is_ok());
        h.insert("origin", HeaderValue::from_static("null"));
        assert_eq!(check_origin(&h, own, &[]), Err(CsrfError::ForeignOrigin));
        h.insert("origin", HeaderValue::from_static("http://api.test"));
        assert!(check_origin(&h, own, &[]).is_ok());
    }
}
