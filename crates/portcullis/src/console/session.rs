//! The console's sessions: a stateless cookie signed with a key kept in
//! the store, and the CSRF token bound to it.
//!
//! The cookie carries the admin key's public id, a random session id, when
//! the session began and when it was last used, and an HMAC-SHA256 over
//! them — never the admin key, nor its hash. Every request re-checks the
//! signature, the absolute and idle limits, and (in `mod.rs`) that the
//! admin key is still active, so revoking or disabling the key ends every
//! console session it opened, on every gateway sharing the store.
//!
//! Signing out ends the session in the browser (the cookie is cleared)
//! and on this gateway (its id is remembered until its absolute expiry).

use crate::console::ConsoleOptions;
use hmac::{Hmac, Mac};
use moka::sync::Cache;
use portcullis_core::csrf::{self, CsrfError};
use portcullis_core::{KeyHash, Secret};
use sha2::Sha256;
use std::time::Duration;

/// The cookie's name. `__Host-`: Secure, `Path=/`, no `Domain`, so a
/// sibling host cannot plant or overwrite it.
pub const COOKIE: &str = "__Host-portcullis_console";

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The admin key's public id.
    pub(crate) key_id: String,
    /// The session's random id (what CSRF tokens are bound to).
    pub(crate) sid: String,
    /// Unix seconds: when the session began.
    pub(crate) issued: i64,
    /// Unix seconds: the last request seen.
    pub(crate) seen: i64,
}

/// Why a cookie opened no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// No cookie.
    Missing,
    /// Not a cookie we signed (or altered).
    Invalid,
    /// Past the absolute lifetime.
    Expired,
    /// Idle too long.
    Idle,
    /// Signed out.
    SignedOut,
}

impl Ended {
    /// The reason for the log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Ended::Missing => "console_session_missing",
            Ended::Invalid => "console_session_invalid",
            Ended::Expired => "console_session_expired",
            Ended::Idle => "console_session_idle",
            Ended::SignedOut => "console_session_signed_out",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks session cookies and CSRF tokens.
pub(crate) struct Sessions {
    key: Secret<Vec<u8>>,
    ttl: i64,
    idle: i64,
    ended: Cache<String, ()>,
}

const LABEL: &[u8] = b"portcullis-console-session-v1\0";

impl Sessions {
    pub(crate) fn new(key: Vec<u8>, opts: &ConsoleOptions) -> Sessions {
        let ttl = opts.session_ttl.as_secs().max(1);
        Sessions {
            key: Secret::new(key),
            ttl: i64::try_from(ttl).unwrap_or(i64::MAX),
            idle: i64::try_from(opts.idle_timeout.as_secs().max(1)).unwrap_or(i64::MAX),
            ended: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(ttl))
                .build(),
        }
    }

    /// The absolute lifetime, seconds.
    pub(crate) fn ttl(&self) -> i64 {
        self.ttl
    }

    fn mac(&self, payload: &str) -> Option<HmacSha256> {
        let mut m = <HmacSha256 as Mac>::new_from_slice(self.key.expose()).ok()?;
        m.update(LABEL);
        m.update(payload.as_bytes());
        Some(m)
    }

    /// The cookie value for `s`.
    pub(crate) fn seal(&self, s: &Session) -> String {
        let payload = format!("v1.{}.{}.{}.{}", s.key_id, s.sid, s.issued, s.seen);
        let tag = self
            .mac(&payload)
            .map(|m| hex(&m.finalize().into_bytes()))
            .unwrap_or_default();
        format!("{payload}.{tag}")
    }

    /// The session `value` carries at `now`, or why none.
    pub(crate) fn open(&self, value: &str, now: i64) -> Result<Session, Ended> {
        if value.len() > 256 {
            return Err(Ended::Invalid);
        }
        let (payload, tag) = value.rsplit_once('.').ok_or(Ended::Invalid)?;
        let tag = unhex(tag).ok_or(Ended::Invalid)?;
        self.mac(payload)
            .ok_or(Ended::Invalid)?
            .verify_slice(&tag)
            .map_err(|_| Ended::Invalid)?;
        let mut it = payload.split('.');
        let (Some("v1"), Some(key_id), Some(sid), Some(issued), Some(seen), None) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            return Err(Ended::Invalid);
        };
        let issued: i64 = issued.parse().map_err(|_| Ended::Invalid)?;
        let seen: i64 = seen.parse().map_err(|_| Ended::Invalid)?;
        if self.ended.contains_key(sid) {
            return Err(Ended::SignedOut);
        }
        if issued.saturating_add(self.ttl) <= now {
            return Err(Ended::Expired);
        }
        if seen.saturating_add(self.idle) <= now {
            return Err(Ended::Idle);
        }
        Ok(Session {
            key_id: key_id.to_owned(),
            sid: sid.to_owned(),
            issued,
            seen,
        })
    }

    /// Remembers that `s` was signed out, until it would have expired.
    pub(crate) fn end(&self, s: &Session) {
        self.ended.insert(s.sid.clone(), ());
    }

    fn binding(sid: &str) -> KeyHash {
        KeyHash::of(&format!("portcullis-console:{sid}"))
    }

    /// A CSRF token for the session's forms (a synchronizer token: an
    /// HMAC binding random bytes to the session id).
    pub(crate) fn csrf_token(&self, s: &Session) -> String {
        let mut r = [0u8; csrf::RANDOM_BYTES];
        // Without randomness the token is still bound to the session by
        // its HMAC; the random part only makes tokens differ.
        let _ = getrandom::fill(&mut r);
        csrf::issue(self.key.expose(), &Self::binding(&s.sid), &r)
    }

    /// Checks a form's CSRF token against the session.
    pub(crate) fn check_csrf(&self, s: &Session, token: Option<&str>) -> Result<(), CsrfError> {
        let token = token.filter(|t| !t.is_empty());
        csrf::verify(self.key.expose(), &Self::binding(&s.sid), token)
    }
}

/// A fresh session id: 128 random bits in base62.
pub(crate) fn new_sid() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    let mut s = String::with_capacity(22);
    portcullis_core::base62::encode_fixed(&b, 22, &mut s);
    Some(s)
}

/// Whether `id` can sit in the cookie as it is: a key id is `key_` and
/// base62, so anything else is refused rather than escaped.
pub(crate) fn plain_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

/// The value of cookie `name` in `headers`, if sent exactly once.
pub(crate) fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = None;
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((n, val)) = pair.trim().split_once('=')
                && n == name
            {
                if found.is_some() {
                    // Two cookies of one name: one was planted; trust
                    // neither.
                    return None;
                }
                found = Some(val);
            }
        }
    }
    found
}

/// The `Set-Cookie` value for a session cookie lasting `max_age` seconds.
pub(crate) fn set_cookie(value: &str, max_age: i64) -> String {
    format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that clears the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        let opts = ConsoleOptions {
            session_ttl: Duration::from_secs(100),
            idle_timeout: Duration::from_secs(10),
            ..ConsoleOptions::default()
        };
        Sessions::new(vec![7u8; 32], &opts)
    }

    fn s() -> Session {
        Session {
            key_id: "key_abc".into(),
            sid: new_sid().unwrap(),
            issued: 1000,
            seen: 1000,
        }
    }

    #[test]
    fn sealed_sessions_open_until_their_limits() {
        let ss = sessions();
        let s = s();
        let v = ss.seal(&s);
        assert_eq!(ss.open(&v, 1005), Ok(s.clone()));
        assert_eq!(ss.open(&v, 1010), Err(Ended::Idle));
        let mut later = s.clone();
        later.seen = 1095;
        assert_eq!(ss.open(&ss.seal(&later), 1100), Err(Ended::Expired));
        ss.end(&s);
        assert_eq!(ss.open(&v, 1005), Err(Ended::SignedOut));
    }

    #[test]
    fn altered_or_foreign_cookies_do_not_open() {
        let ss = sessions();
        let v = ss.seal(&s());
        let other = Sessions::new(vec![8u8; 32], &ConsoleOptions::default());
        assert_eq!(other.open(&v, 1001), Err(Ended::Invalid));
        let forged = v.replacen("key_abc", "key_abd", 1);
        assert_eq!(ss.open(&forged, 1001), Err(Ended::Invalid));
        let later = v.replacen(".1000.", ".1001.", 1);
        assert_eq!(ss.open(&later, 1001), Err(Ended::Invalid));
        for junk in ["", ".", "v1.a.b.1.1.zz", &"a".repeat(300)] {
            assert_eq!(ss.open(junk, 1001), Err(Ended::Invalid), "{junk}");
        }
    }

    #[test]
    fn csrf_tokens_bind_to_the_session() {
        let ss = sessions();
        let (a, b) = (s(), s());
        let t = ss.csrf_token(&a);
        assert!(ss.check_csrf(&a, Some(&t)).is_ok());
        assert_eq!(ss.check_csrf(&b, Some(&t)), Err(CsrfError::BadToken));
        assert_eq!(ss.check_csrf(&a, None), Err(CsrfError::MissingToken));
        assert_eq!(ss.check_csrf(&a, Some("")), Err(CsrfError::MissingToken));
    }

    #[test]
    fn one_cookie_of_a_name_or_none() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; __Host-portcullis_console=x".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("x"));
        h.append(
            http::header::COOKIE,
            "__Host-portcullis_console=y".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), None);
    }
}
