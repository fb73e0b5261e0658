//! Scopes: the permissions a principal carries and a route requires.

use std::fmt;

/// A set of scope tokens, sorted and without duplicates. Tokens follow RFC
/// 6749 §3.3 (printable ASCII without space, `"` or `\`). Shared by
/// reference count: every request's principal carries a copy of its key's
/// scopes, and a copy is one atomic increment, not an allocation per token.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(std::sync::Arc<[String]>);

/// A scope string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope {0:?}: scopes are printable ASCII without spaces, quotes or backslashes, at most 128 characters"
)]
pub struct ScopeError(pub String);

const MAX_SCOPE_LEN: usize = 128;

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_SCOPE_LEN
        && t.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

impl Scopes {
    /// Parses space- or comma-separated scope tokens.
    pub fn parse(s: &str) -> Result<Scopes, ScopeError> {
        Self::from_iter_checked(s.split([' ', ',']).map(str::trim).filter(|t| !t.is_empty()))
    }

    /// Builds a set from individual tokens, checking each.
    pub fn from_iter_checked<'a>(
        it: impl IntoIterator<Item = &'a str>,
    ) -> Result<Scopes, ScopeError> {
        let mut v = Vec::new();
        for t in it {
            // A token with an embedded comma would be split on reload.
            if !valid_token(t) || t.contains(',') {
                return Err(ScopeError(t.chars().take(40).collect()));
            }
            v.push(t.to_owned());
        }
        v.sort();
        v.dedup();
        Ok(Scopes(v.into()))
    }

    /// The empty set.
    pub fn empty() -> Scopes {
        Scopes::default()
    }

    /// True when the set holds `scope`.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.binary_search_by(|s| s.as_str().cmp(scope)).is_ok()
    }

    /// The scopes of `required` that this set lacks (empty = allowed).
    pub fn missing<'a>(&self, required: &'a Scopes) -> Vec<&'a str> {
        required
            .0
            .iter()
            .filter(|s| !self.contains(s))
            .map(String::as_str)
            .collect()
    }

    /// True when every scope of `required` is held.
    pub fn covers(&self, required: &Scopes) -> bool {
        required.0.iter().all(|s| self.contains(s))
    }

    /// Iterates over the tokens in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Space-separated, as OAuth2 writes scopes.
    pub fn to_space_separated(&self) -> String {
        self.0.join(" ")
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_space_separated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parse_and_check() {
        let s = Scopes::parse("b a, c a").unwrap();
        assert_eq!(s.to_space_separated(), "a b c");
        let req = Scopes::parse("a d").unwrap();
        assert_eq!(s.missing(&req), vec!["d"]);
        assert!(s.covers(&Scopes::parse("c").unwrap()));
        assert!(Scopes::parse("bad\"quote").is_err());
        assert!(Scopes::parse("ünicode").is_err());
        assert!(Scopes::parse("").unwrap().is_empty());
    }
}
