//! Route matching: exact paths and `/**` prefixes, with methods.
//!
//! The most specific pattern that matches the path decides: an exact path
//! beats any prefix, and a longer prefix beats a shorter one. Within that
//! pattern, the first route listing the method wins; if none lists it the
//! answer is 405 with the methods that would have been allowed. A path no
//! pattern matches is 404: nothing is proxied unless a route says so.
//!
//! Paths are matched in canonical form ([`crate::path`]) and without
//! regard to ASCII case: Express, ASP.NET and IIS route `/ADMIN` to
//! `/admin`, so a case-sensitive match would let `/ADMIN` past an
//! `/admin` route to a `/**` one. Two patterns that differ only in case
//! are one pattern ([`PathPattern::folded`]); the config refuses them.

use http::Method;
use std::collections::HashMap;

/// A path pattern from config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// Matches this path only.
    Exact(String),
    /// Matches the base path and everything below it (`/api/**`).
    Prefix(String),
}

/// A route pattern that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Must start with `/`.
    #[error("a route path must start with '/'")]
    NoLeadingSlash,
    /// `*` is allowed only as a final `/**`.
    #[error("'*' is allowed only as a final '/**'")]
    Wildcard,
    /// A non-ASCII character: Portcullis matches ASCII case only, and
    /// upstreams that fold Unicode case would read `/CAFÉ` as `/café`.
    #[error(
        "a route path must be ASCII (write other characters in a prefix's tail, not in the pattern)"
    )]
    NonAscii,
    /// A spelling requests are refused for (see [`crate::path`]).
    #[error("a route path must be a path requests can name: {0}")]
    NotNormal(crate::path::PathError),
}

impl PathPattern {
    /// Parses `/exact` or `/prefix/**` (and `/**` for everything). The
    /// path is kept in its canonical form ([`crate::path::canonicalize`]),
    /// the form requests are matched in.
    pub fn parse(s: &str) -> Result<PathPattern, PatternError> {
        if !s.starts_with('/') {
            return Err(PatternError::NoLeadingSlash);
        }
        let (base, prefix) = match s.strip_suffix("/**") {
            Some(b) => (b, true),
            None => (s, false),
        };
        let base = if base.is_empty() {
            String::new()
        } else {
            crate::path::canonicalize(base)
                .map_err(PatternError::NotNormal)?
                .into_owned()
        };
        // After canonicalising: `%2A` is a `*` too (found by fuzzing).
        if base.contains('*') {
            return Err(PatternError::Wildcard);
        }
        // Non-ASCII is escaped in canonical form: `%8X`..`%FX`.
        if base
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b'%' && matches!(w[1], b'8'..=b'9' | b'A'..=b'F'))
        {
            return Err(PatternError::NonAscii);
        }
        Ok(if prefix {
            PathPattern::Prefix(base.trim_end_matches('/').to_owned())
        } else {
            PathPattern::Exact(base)
        })
    }
}

impl PathPattern {
    /// The pattern as it is matched: ASCII lower-cased, and an exact path
    /// without its trailing slash.
    pub fn folded(&self) -> PathPattern {
        match self {
            PathPattern::Exact(p) => PathPattern::Exact(exact_key(p).to_ascii_lowercase()),
            PathPattern::Prefix(p) => PathPattern::Prefix(p.to_ascii_lowercase()),
        }
    }
}

/// An exact path as it is looked up: without one trailing slash (Express,
/// ASP.NET and Spring serve `/admin/` from `/admin` and the other way
/// round, so `/admin/` must need `/admin`'s credential; found in review).
fn exact_key(p: &str) -> &str {
    match p.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => p,
    }
}

/// Does the prefix `base` (without its `/**`, lower-cased) cover `path`,
/// ignoring ASCII case?
fn prefix_matches(base: &str, path: &str) -> bool {
    let (b, p) = (base.as_bytes(), path.as_bytes());
    base.is_empty()
        || (p.len() >= b.len()
            && p.get(..b.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(b))
            && matches!(p.get(b.len()), None | Some(&b'/')))
}

/// The result of matching.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a, R> {
    /// A route accepts this method and path.
    Found(&'a R),
    /// The path is routed, but not for this method.
    MethodNotAllowed(Vec<Method>),
    /// No route matches the path.
    NotFound,
}

struct Entry<R> {
    methods: Option<Vec<Method>>,
    route: R,
}

/// Routes grouped by pattern, ready to match.
pub struct RouteTable<R> {
    exact: HashMap<String, Vec<Entry<R>>>,
    // Longest base first.
    prefixes: Vec<(String, Vec<Entry<R>>)>,
}

impl<R> Default for RouteTable<R> {
    fn default() -> Self {
        RouteTable {
            exact: HashMap::new(),
            prefixes: Vec::new(),
        }
    }
}

impl<R> RouteTable<R> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. `methods: None` accepts every method.
    pub fn add(&mut self, pattern: PathPattern, methods: Option<Vec<Method>>, route: R) {
        let e = Entry { methods, route };
        match pattern.folded() {
            PathPattern::Exact(p) => self.exact.entry(p).or_default().push(e),
            PathPattern::Prefix(base) => {
                if let Some((_, v)) = self.prefixes.iter_mut().find(|(b, _)| *b == base) {
                    v.push(e);
                } else {
                    self.prefixes.push((base, vec![e]));
                    self.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
                }
            }
        }
    }

    /// Matches a canonical path ([`crate::path::canonicalize`]) and a
    /// method.
    pub fn find(&self, method: &Method, path: &str) -> RouteMatch<'_, R> {
        // Exact patterns are kept lower-cased and without a trailing
        // slash; most paths already are.
        let key = exact_key(path);
        let folded = if key.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(key.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(key)
        };
        let group = self
            .exact
            .get(folded.as_ref())
            .map(Vec::as_slice)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(base, _)| prefix_matches(base, path))
                    .map(|(_, v)| v.as_slice())
            });
        let Some(group) = group else {
            return RouteMatch::NotFound;
        };
        let head_as_get = *method == Method::HEAD;
        for e in group {
            match &e.methods {
                None => return RouteMatch::Found(&e.route),
                Some(ms) if ms.contains(method) || (head_as_get && ms.contains(&Method::GET)) => {
                    return RouteMatch::Found(&e.route);
                }
                Some(_) => {}
            }
        }
        let mut allowed: Vec<Method> = Vec::new();
        for e in group {
            for m in e.methods.iter().flatten() {
                if !allowed.contains(m) {
                    allowed.push(m.clone());
                }
            }
        }
        RouteMatch::MethodNotAllowed(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut t = RouteTable::new();
        t.add(
            PathPattern::parse("/data").unwrap(),
            Some(vec![Method::GET]),
            "data",
        );
        t.add(
            PathPattern::parse("/data").unwrap(),
            Some(vec![Method::POST]),
            "data-post",
        );
        t.add(PathPattern::parse("/api/**").unwrap(), None, "api");
        t.add(
            PathPattern::parse("/api/v2/**").unwrap(),
            Some(vec![Method::GET]),
            "v2",
        );
        t
    }

    #[test]
    fn matching() {
        let t = table();
        assert_eq!(t.find(&Method::GET, "/data"), RouteMatch::Found(&"data"));
        assert_eq!(t.find(&Method::HEAD, "/data"), RouteMatch::Found(&"data"));
        assert_eq!(
            t.find(&Method::POST, "/data"),
            RouteMatch::Found(&"data-post")
        );
        assert_eq!(
            t.find(&Method::DELETE, "/data"),
            RouteMatch::MethodNotAllowed(vec![Method::GET, Method::POST])
        );
        assert_eq!(t.find(&Method::GET, "/data/x"), RouteMatch::NotFound);
        assert_eq!(t.find(&Method::DELETE, "/api"), RouteMatch::Found(&"api"));
        assert_eq!(t.find(&Method::GET, "/api/x/y"), RouteMatch::Found(&"api"));
        assert_eq!(t.find(&Method::GET, "/apix"), RouteMatch::NotFound);
        // One trailing slash does not matter for exact patterns.
        assert_eq!(t.find(&Method::GET, "/data/"), RouteMatch::Found(&"data"));
        assert_eq!(t.find(&Method::GET, "/data//"), RouteMatch::NotFound);
        // ASCII case does not matter, for exact and prefix patterns.
        assert_eq!(t.find(&Method::GET, "/DATA"), RouteMatch::Found(&"data"));
        assert_eq!(t.find(&Method::GET, "/Api/V2/z"), RouteMatch::Found(&"v2"));
        assert_eq!(t.find(&Method::GET, "/APIX"), RouteMatch::NotFound);
        assert_eq!(t.find(&Method::GET, "/api/v2/z"), RouteMatch::Found(&"v2"));
        assert!(matches!(
            t.find(&Method::POST, "/api/v2/z"),
            RouteMatch::MethodNotAllowed(_)
        ));
    }

    #[test]
    fn patterns_and_paths() {
        assert!(PathPattern::parse("data").is_err());
        assert!(PathPattern::parse("/a/*/b").is_err());
        assert!(PathPattern::parse("/a/../b").is_err());
        assert_eq!(
            PathPattern::parse("/**"),
            Ok(PathPattern::Prefix(String::new()))
        );
        for bad in [
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/a\\b",
            "//a",
            "/..",
            "/a;b/**",
            "/%2A",
            "/w/%2a8//**",
            "/caf%c3%a9",
            "/café/**",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
        for (good, kept) in [
            ("/", "/"),
            ("/a", "/a"),
            ("/a/", "/a/"),
            ("/a/b.c", "/a/b.c"),
            ("/a/..b", "/a/..b"),
            ("/%41", "/A"),
        ] {
            assert_eq!(
                PathPattern::parse(good),
                Ok(PathPattern::Exact(kept.to_owned())),
                "{good}"
            );
        }
        assert_eq!(
            PathPattern::parse("/%70rivate/**"),
            Ok(PathPattern::Prefix("/private".to_owned()))
        );
    }
}
