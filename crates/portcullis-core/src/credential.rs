//! Where credentials are read from, and the one-credential rule.
//!
//! A route lists the schemes it accepts. Every scheme is looked for; exactly
//! one credential may be present. None → the caller answers 401; two or
//! more (say a key in both header and query, or the same header twice) →
//! 400, because a request that names two identities is either a mistake or
//! parameter pollution (ASVS 5.0 15.3.7).

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use std::borrow::Cow;
use std::fmt;

/// A way of presenting a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// API key in a request header (`X-API-Key`).
    ApiKeyHeader,
    /// API key in a query parameter (`api_key`); off unless enabled.
    ApiKeyQuery,
    /// API key in a cookie (`api_key`).
    ApiKeyCookie,
    /// `Authorization: Bearer` — an API key, or a JWT.
    Bearer,
    /// `Authorization: Basic` — a user's name and password.
    Basic,
    /// A session cookie from `POST /auth/login`.
    Session,
}

impl Scheme {
    /// Every scheme.
    pub const ALL: [Scheme; 6] = [
        Scheme::ApiKeyHeader,
        Scheme::ApiKeyQuery,
        Scheme::ApiKeyCookie,
        Scheme::Bearer,
        Scheme::Basic,
        Scheme::Session,
    ];

    /// The name used in config.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::ApiKeyHeader => "api_key_header",
            Scheme::ApiKeyQuery => "api_key_query",
            Scheme::ApiKeyCookie => "api_key_cookie",
            Scheme::Bearer => "bearer",
            Scheme::Basic => "basic",
            Scheme::Session => "session",
        }
    }

    /// Reads a config name.
    pub fn from_name(name: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The `WWW-Authenticate` challenge for a missing credential, as
    /// FastAPI's security classes send it.
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            Scheme::ApiKeyHeader | Scheme::ApiKeyQuery | Scheme::ApiKeyCookie => Some("APIKey"),
            Scheme::Bearer => Some("Bearer"),
            Scheme::Basic => Some(crate::basic::CHALLENGE),
            Scheme::Session => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names credentials are read under.
#[derive(Debug, Clone)]
pub struct CredentialNames {
    /// Header for `api_key_header` (lowercase).
    pub header: http::HeaderName,
    /// Query parameter for `api_key_query`.
    pub query: String,
    /// Cookie for `api_key_cookie`.
    pub cookie: String,
    /// Cookie for `session`.
    pub session_cookie: String,
}

impl Default for CredentialNames {
    fn default() -> Self {
        CredentialNames {
            header: http::HeaderName::from_static("x-api-key"),
            query: "api_key".into(),
            cookie: "api_key".into(),
            session_cookie: "__Host-portcullis_session".into(),
        }
    }
}

/// A route's accepted schemes, in order, with the challenge header for a
/// missing credential computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeSet {
    schemes: Vec<Scheme>,
    challenge: Option<String>,
}

impl SchemeSet {
    /// Builds the set; duplicates are dropped, order kept.
    pub fn new(schemes: &[Scheme]) -> SchemeSet {
        let mut v: Vec<Scheme> = Vec::new();
        for s in schemes {
            if !v.contains(s) {
                v.push(*s);
            }
        }
        let mut ch: Vec<&str> = Vec::new();
        for s in &v {
            if let Some(c) = s.challenge()
                && !ch.contains(&c)
            {
                ch.push(c);
            }
        }
        let challenge = if ch.is_empty() {
            None
        } else {
            Some(ch.join(", "))
        };
        SchemeSet {
            schemes: v,
            challenge,
        }
    }
    /// The schemes, in order.
    pub fn schemes(&self) -> &[Scheme] {
        &self.schemes
    }
    /// True when the route is public.
    pub fn is_public(&self) -> bool {
        self.schemes.is_empty()
    }
    /// True when `s` is accepted.
    pub fn accepts(&self, s: Scheme) -> bool {
        self.schemes.contains(&s)
    }
    /// `WWW-Authenticate` for a missing credential.
    pub fn challenge(&self) -> Option<&str> {
        self.challenge.as_deref()
    }
}

/// A credential found in a request.
#[derive(Clone, PartialEq, Eq)]
pub struct Presented<'a> {
    /// Where it was found.
    pub scheme: Scheme,
    /// The value; `None` when the bytes were not readable text (which
    /// makes it an invalid credential, not a missing one).
    pub value: Option<Cow<'a, str>>,
}

impl fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("scheme", &self.scheme)
            .field("value", &"[REDACTED]")
            .finish()
    }
}

/// The outcome of looking for credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extracted<'a> {
    /// Nothing of the route's schemes.
    Missing,
    /// Exactly one credential.
    One(Presented<'a>),
    /// More than one; the string says where, for the client.
    Ambiguous(&'static str),
}

/// Looks for the route's credentials in the request head.
pub fn extract<'a>(
    set: &SchemeSet,
    names: &CredentialNames,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Extracted<'a> {
    let mut found: Option<Presented<'a>> = None;
    let mut push = |p: Presented<'a>| -> Result<(), &'static str> {
        if found.is_some() {
            return Err("more than one credential was presented; send exactly one");
        }
        found = Some(p);
        Ok(())
    };
    // The Authorization header serves two schemes; read it once.
    let mut auth_seen = false;
    for &scheme in set.schemes() {
        let r = match scheme {
            Scheme::ApiKeyHeader => match one_header(headers, &names.header) {
                Ok(None) => Ok(()),
                Ok(Some(v)) => push(Presented { scheme, value: v }),
                Err(()) => {
                    return Extracted::Ambiguous("the API key header was sent more than once");
                }
            },
            Scheme::ApiKeyQuery => match query.map(|q| query_param(q, &names.query)) {
                None | Some(Ok(None)) => Ok(()),
                Some(Ok(Some(v))) => push(Presented {
                    scheme,
                    value: Some(v),
                }),
                Some(Err(())) => {
                    return Extracted::Ambiguous(
                        "the API key query parameter was sent more than once",
                    );
                }
            },
            Scheme::ApiKeyCookie | Scheme::Session => {
                let name = if scheme == Scheme::Session {
                    &names.session_cookie
                } else {
                    &names.cookie
                };
                match cookie(headers, name) {
                    Ok(None) => Ok(()),
                    Ok(Some(v)) => push(Presented {
                        scheme,
                        value: Some(Cow::Borrowed(v)),
                    }),
                    Err(Repeated) => {
                        return Extracted::Ambiguous(
                            "the credential cookie was sent more than once",
                        );
                    }
                }
            }
            Scheme::Bearer | Scheme::Basic => {
                if auth_seen {
                    continue;
                }
                match authorization(headers) {
                    Ok(None) => Ok(()),
                    Ok(Some((s, v))) if set.accepts(s) => {
                        auth_seen = true;
                        push(Presented {
                            scheme: s,
                            value: v.map(Cow::Borrowed),
                        })
                    }
                    // Another scheme in Authorization is not ours to judge.
                    Ok(Some(_)) => Ok(()),
                    Err(()) => {
                        return Extracted::Ambiguous(
                            "the Authorization header was sent more than once",
                        );
                    }
                }
            }
        };
        if let Err(why) = r {
            return Extracted::Ambiguous(why);
        }
    }
    match found {
        Some(p) => Extracted::One(p),
        None => Extracted::Missing,
    }
}

/// One header's value: Ok(None) when absent or empty, Err when repeated.
fn one_header<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
) -> Result<Option<Option<Cow<'a, str>>>, ()> {
    let mut it = headers.get_all(name).iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(());
    }
    if first.is_empty() {
        return Ok(None);
    }
    Ok(Some(first.to_str().ok().map(Cow::Borrowed)))
}

/// Reads `Authorization`: the scheme and the credentials after it.
fn authorization(headers: &HeaderMap) -> Result<Option<(Scheme, Option<&str>)>, ()> {
    let mut it = headers.get_all(AUTHORIZATION).iter();
    let Some(v) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(());
    }
    let Ok(s) = v.to_str() else {
        // Unreadable bytes: we cannot tell the scheme, so it is not ours.
        return Ok(None);
    };
    let s = s.trim();
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    let rest = rest.trim();
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("basic") {
        Scheme::Basic
    } else {
        return Ok(None);
    };
    if rest.is_empty() {
        // FastAPI: an empty credential is a missing one.
        return Ok(None);
    }
    Ok(Some((scheme, Some(rest))))
}

/// A cookie sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// Finds cookie `name` across all `Cookie` headers. Err when repeated
/// (two cookies of one name are how a sibling site plants its own).
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Repeated> {
    let mut found = None;
    for h in headers.get_all(COOKIE) {
        let Ok(s) = h.to_str() else { continue };
        for pair in s.split(';') {
            let pair = pair.trim();
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            if n.trim() == name {
                let v = v.trim().trim_matches('"');
                if v.is_empty() {
                    continue;
                }
                if found.is_some() {
                    return Err(Repeated);
                }
                found = Some(v);
            }
        }
    }
    Ok(found)
}

/// Finds query parameter `name`. Err when it appears more than once with a
/// value.
fn query_param<'a>(query: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, ()> {
    let mut found = None;
    for pair in query.split('&') {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(n).as_deref() == Some(name) {
            let Some(v) = percent_decode(v) else {
                return Ok(Some(Cow::Borrowed("\u{fffd}")));
            };
            if v.is_empty() {
                continue;
            }
            if found.is_some() {
                return Err(());
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Decodes `%XX` and `+` in a query component. `None` when the result is not
/// UTF-8 or an escape is broken.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hi = b.get(i + 1).and_then(|h| (*h as char).to_digit(16))?;
                let lo = b.get(i + 2).and_then(|h| (*h as char).to_digit(16))?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The query string without parameter `name` (every occurrence), or `None`
/// when nothing is left.
pub fn strip_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let n = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && percent_decode(n).as_deref() != Some(name)
        })
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

/// A `Cookie` header value without cookie `name`, or `None` when nothing
/// is left.
pub fn strip_cookie(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let n = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && n.trim() != name
        })
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn set(s: &[Scheme]) -> SchemeSet {
        SchemeSet::new(s)
    }

    #[test]
    fn finds_one_credential() {
        let names = CredentialNames::default();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        let all = set(&Scheme::ALL);
        match extract(&all, &names, &h, None) {
            Extracted::One(p) => {
                assert_eq!(p.scheme, Scheme::ApiKeyHeader);
                assert_eq!(p.value.as_deref(), Some("k1"));
            }
            other => panic!("{other:?}"),
        }
        // header + query → ambiguous
        assert!(matches!(
            extract(&all, &names, &h, Some("api_key=k2")),
            Extracted::Ambiguous(_)
        ));
        // query ignored when the route does not accept it
        let hdr = set(&[Scheme::ApiKeyHeader]);
        assert!(matches!(
            extract(&hdr, &names, &h, Some("api_key=k2")),
            Extracted::One(_)
        ));
    }

    #[test]
    fn duplicates_are_ambiguous_and_empties_are_missing() {
        let names = CredentialNames::default();
        let all = set(&Scheme::ALL);
        let mut h = HeaderMap::new();
        h.append("x-api-key", HeaderValue::from_static("a"));
        h.append("x-api-key", HeaderValue::from_static("b"));
        assert!(matches!(
            extract(&all, &names, &h, None),
            Extracted::Ambiguous(_)
        ));
        let h = HeaderMap::new();
        assert!(matches!(
            extract(&all, &names, &h, Some("api_key=a&api_key=b")),
            Extracted::Ambiguous(_)
        ));
        assert_eq!(
            extract(&all, &names, &h, Some("api_key=&x=1")),
            Extracted::Missing
        );
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("api_key=a; other=1; api_key=b"),
        );
        assert!(matches!(
            extract(&all, &names, &h, None),
            Extracted::Ambiguous(_)
        ));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert_eq!(extract(&all, &names, &h, None), Extracted::Missing);
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Digest abc"));
        assert_eq!(extract(&all, &names, &h, None), Extracted::Missing);
    }

    #[test]
    fn bearer_and_cookie() {
        let names = CredentialNames::default();
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("bearer  tok "));
        h.insert("cookie", HeaderValue::from_static("a=1; api_key=ck"));
        let b = set(&[Scheme::Bearer]);
        match extract(&b, &names, &h, None) {
            Extracted::One(p) => assert_eq!(p.value.as_deref(), Some("tok")),
            o => panic!("{o:?}"),
        }
        let c = set(&[Scheme::ApiKeyCookie]);
        match extract(&c, &names, &h, None) {
            Extracted::One(p) => assert_eq!(p.value.as_deref(), Some("ck")),
            o => panic!("{o:?}"),
        }
        // basic header on a bearer-only route is not a credential
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic dTpw"));
        assert_eq!(extract(&b, &names, &h, None), Extracted::Missing);
    }

    #[test]
    fn non_ascii_header_is_present_but_unreadable() {
        let names = CredentialNames::default();
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        match extract(&set(&[Scheme::ApiKeyHeader]), &names, &h, None) {
            Extracted::One(p) => assert_eq!(p.value, None),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn stripping() {
        assert_eq!(
            strip_query_param("a=1&api_key=x&b=2", "api_key").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(strip_query_param("api%5Fkey=x", "api_key"), None);
        assert_eq!(
            strip_cookie("a=1; api_key=x;b=2", "api_key").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookie("api_key=x", "api_key"), None);
        assert_eq!(
            SchemeSet::new(&[Scheme::ApiKeyHeader, Scheme::ApiKeyCookie, Scheme::Bearer])
                .challenge(),
            Some("APIKey, Bearer")
        );
    }
}
