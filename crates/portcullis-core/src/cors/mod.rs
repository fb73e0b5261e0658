//! Cross-origin resource sharing: which other sites' pages may read our
//! answers, decided from an allowlist of exact origins.
//!
//! The behaviour follows Starlette's `CORSMiddleware` (same preflight
//! checks, failure order and wording, same `Allow-Headers` value) so a
//! FastAPI service moved behind the gateway answers browsers the same way.
//! Where Starlette is permissive, this module is deliberately stricter,
//! because CORS mistakes let any site read a user's credentialed answers:
//!
//! * Origins are exact `scheme://host[:port]` values, parsed and normalised
//!   when the config is loaded, then compared byte for byte with what the
//!   browser sends. No regex, prefix, suffix or subdomain matching: each of
//!   those has been bypassed in the wild (`https://example.com.evil.net`,
//!   `https://evilexample.com`, a taken-over subdomain).
//! * `null` is never allowed: sandboxed iframes, `file:` pages and
//!   redirects all send it, so allowing it allows anyone.
//! * `*` (any origin, any header, any exposed header) is refused together
//!   with credentials, at load time rather than as a surprise at runtime.
//! * A refused origin gets neither `Access-Control-Allow-Origin` nor
//!   `Access-Control-Allow-Credentials` (Starlette sends the latter anyway).
//! * The gateway owns CORS: upstream `Access-Control-Allow-Origin`,
//!   `-Credentials` and `-Expose-Headers` are removed from every answer, so an
//!   upstream that reflects origins cannot leak through.
//! * Every answer whose CORS headers depend on the request says so in
//!   `Vary`, so a shared cache never serves one origin's answer to another.
//!
//! CORS is not authorization: requests from refused origins still reach the
//! normal credential checks, and `Origin` is never used to grant access.
//!
//! The module is in two parts: `config.rs` reads and validates the
//! settings once, at load time (every refusal there is a
//! [`CorsConfigError`] naming the entry), and `decide.rs` answers requests
//! with the result. Hosts in origins are read by [`crate::authority`], the
//! reader the `Host` check uses.

mod config;
mod decide;

pub use config::{CorsConfig, CorsConfigError};
pub use decide::{Cors, CorsRefusal, single_origin, strip_cors};

/// Request headers a browser may always send (Starlette's list).
const SAFELISTED_HEADERS: [&str; 4] = [
    "Accept",
    "Accept-Language",
    "Content-Language",
    "Content-Type",
];

/// Helpers shared by the two parts' tests.
#[cfg(test)]
mod testutil {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::{Cors, CorsConfig};
    use http::{HeaderMap, HeaderName, HeaderValue};

    pub(super) fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| String::from(*s)).collect()
    }

    pub(super) fn cors(c: CorsConfig) -> Cors {
        Cors::new(&c).unwrap()
    }

    pub(super) fn req(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    pub(super) fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }
}
