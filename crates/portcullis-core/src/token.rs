//! Access-token claim rules (RFC 9068, RFC 8725): what a verified JWT's
//! header and claims must say before the token grants anything. The
//! signature is checked elsewhere; these are the rules that follow it.

use serde::Deserialize;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Longest `kid` looked up.
pub const MAX_KID_BYTES: usize = 128;

/// The most clock skew a config may allow.
pub const MAX_LEEWAY_SECS: i64 = 60;

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` names `want`.
    pub fn contains(&self, want: &str) -> bool {
        match self {
            Audience::One(a) => a == want,
            Audience::Many(v) => v.iter().any(|a| a == want),
        }
    }
}

/// The claims of an access token. Every field has the one JSON type the
/// RFCs give it: `"exp": "never"` fails to parse and so fails the token
/// (the claim-type confusion of CVE-2026-25537 cannot happen here).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience.
    pub aud: Audience,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issued at.
    #[serde(default)]
    pub iat: Option<i64>,
    /// Not before.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Token id.
    #[serde(default)]
    pub jti: Option<String>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: Option<String>,
    /// The client the token was issued to.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// What a token must match.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// The issuer.
    pub issuer: &'a str,
    /// Our audience.
    pub audience: &'a str,
    /// Allowed clock skew, seconds (at most [`MAX_LEEWAY_SECS`]).
    pub leeway: i64,
}

/// Why the claims fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// `typ` is not `at+jwt`.
    WrongType,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// `iat` in the future.
    IssuedInFuture,
    /// Another issuer.
    WrongIssuer,
    /// Not for us.
    WrongAudience,
    /// Empty subject.
    NoSubject,
}

impl ClaimError {
    /// The reason for the log.
    pub fn reason(self) -> &'static str {
        match self {
            ClaimError::WrongType => "jwt_wrong_typ",
            ClaimError::Expired => "jwt_expired",
            ClaimError::NotYetValid => "jwt_not_yet_valid",
            ClaimError::IssuedInFuture => "jwt_iat_future",
            ClaimError::WrongIssuer => "jwt_wrong_issuer",
            ClaimError::WrongAudience => "jwt_wrong_audience",
            ClaimError::NoSubject => "jwt_no_subject",
        }
    }
}

/// The header's `typ` marks an access token (RFC 9068 §2.1; the media
/// type's `application/` prefix may be left off, case-insensitively).
pub fn check_typ(typ: Option<&str>) -> Result<(), ClaimError> {
    let t = typ.ok_or(ClaimError::WrongType)?;
    let t = t
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(t, |_| &t[12..]);
    if t.eq_ignore_ascii_case("at+jwt") {
        Ok(())
    } else {
        Err(ClaimError::WrongType)
    }
}

/// Checks the claims at `now` (unix seconds).
pub fn check_claims(c: &AccessClaims, e: &Expect<'_>, now: i64) -> Result<(), ClaimError> {
    let leeway = e.leeway.clamp(0, MAX_LEEWAY_SECS);
    if c.exp <= now - leeway {
        return Err(ClaimError::Expired);
    }
    if c.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(ClaimError::NotYetValid);
    }
    if c.iat.is_some_and(|iat| iat > now + leeway) {
        return Err(ClaimError::IssuedInFuture);
    }
    if c.iss != e.issuer {
        return Err(ClaimError::WrongIssuer);
    }
    if !c.aud.contains(e.audience) {
        return Err(ClaimError::WrongAudience);
    }
    if c.sub.is_empty() {
        return Err(ClaimError::NoSubject);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: Audience::One("a".into()),
            exp: 1000,
            iat: Some(900),
            nbf: Some(900),
            jti: None,
            scope: None,
            client_id: None,
        }
    }
    const E: Expect<'static> = Expect {
        issuer: "i",
        audience: "a",
        leeway: 30,
    };

    #[test]
    fn times_with_leeway() {
        assert!(check_claims(&claims(), &E, 950).is_ok());
        assert!(check_claims(&claims(), &E, 1029).is_ok());
        assert_eq!(check_claims(&claims(), &E, 1030), Err(ClaimError::Expired));
        assert_eq!(
            check_claims(&claims(), &E, 869),
            Err(ClaimError::NotYetValid)
        );
        let mut c = claims();
        c.nbf = None;
        assert_eq!(check_claims(&c, &E, 869), Err(ClaimError::IssuedInFuture));
        // Leeway is capped whatever the caller asks.
        let lax = Expect { leeway: 3600, ..E };
        assert_eq!(
            check_claims(&claims(), &lax, 1061),
            Err(ClaimError::Expired)
        );
    }

    #[test]
    fn issuer_audience_subject() {
        let mut c = claims();
        c.iss = "x".into();
        assert_eq!(check_claims(&c, &E, 950), Err(ClaimError::WrongIssuer));
        let mut c = claims();
        c.aud = Audience::Many(vec!["b".into(), "a".into()]);
        assert!(check_claims(&c, &E, 950).is_ok());
        c.aud = Audience::Many(vec![]);
        assert_eq!(check_claims(&c, &E, 950), Err(ClaimError::WrongAudience));
        let mut c = claims();
        c.sub = String::new();
        assert_eq!(check_claims(&c, &E, 950), Err(ClaimError::NoSubject));
    }

    #[test]
    fn typ() {
        assert!(check_typ(Some("at+jwt")).is_ok());
        assert!(check_typ(Some("application/AT+JWT")).is_ok());
        assert!(check_typ(Some("JWT")).is_err());
        assert!(check_typ(None).is_err());
        assert!(check_typ(Some("applicatio")).is_err());
    }
}
