//! The API key format and the rules a stored key is checked against.
//!
//! A key reads `pc_<env>_<random>_<checksum>`: `env` is a short lowercase
//! label (`live`, `test`), `random` is 32 bytes from the OS CSPRNG in 43
//! base62 digits, and `checksum` is the CRC32 of everything before it, in 6
//! base62 digits. The checksum lets a made-up or mistyped key be refused
//! before any cache or store is asked, and lets secret scanners recognise a
//! leaked key with a simple pattern: `pc_[a-z0-9]{1,16}_[0-9A-Za-z]{43}_[0-9A-Za-z]{6}`.

use crate::base62;
use crate::scope::Scopes;
use crate::secret::Secret;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// Bytes of randomness in a key.
pub const RANDOM_BYTES: usize = 32;
const RANDOM_DIGITS: usize = 43;
const CHECKSUM_DIGITS: usize = 6;
const MAX_ENV_LEN: usize = 16;
/// Longest string that can be a key; anything longer is refused unread.
pub const MAX_KEY_LEN: usize = 3 + MAX_ENV_LEN + 1 + RANDOM_DIGITS + 1 + CHECKSUM_DIGITS;
/// Visible characters of the random part kept as the key's display prefix.
const PREFIX_DIGITS: usize = 6;

/// Why a string is not a well-formed key. Never carries the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Longer than any key can be.
    #[error("too long to be a key")]
    TooLong,
    /// Does not have the `pc_<env>_<random>_<checksum>` shape.
    #[error("not in the pc_<env>_<random>_<checksum> shape")]
    Shape,
    /// The environment label is not 1-16 lowercase letters or digits.
    #[error("bad environment label")]
    Env,
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// True when a bearer token looks like one of our keys rather than a JWT.
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with("pc_")
}

/// Checks that `env` is a usable environment label.
pub fn valid_env(env: &str) -> bool {
    !env.is_empty()
        && env.len() <= MAX_ENV_LEN
        && env
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// SHA-256 of a full key: what the store keeps and the cache is keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes key material.
    pub fn of(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }
    /// Constant-time equality, for comparing against a stored hash.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
    /// A short, non-secret fingerprint for logs of keys that are not known.
    pub fn fingerprint(&self) -> String {
        let mut s = String::with_capacity(12);
        for b in self.0.iter().take(6) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", self.fingerprint())
    }
}

/// A key that has passed the format and checksum check.
#[derive(Debug, Clone)]
pub struct ApiKey {
    material: Secret<String>,
    env_len: usize,
}

impl ApiKey {
    /// Builds a new key from fresh random bytes. The caller supplies the
    /// randomness (from the OS CSPRNG), so this crate stays free of I/O.
    pub fn generate(env: &str, random: &[u8; RANDOM_BYTES]) -> Result<ApiKey, KeyFormatError> {
        if !valid_env(env) {
            return Err(KeyFormatError::Env);
        }
        let mut s = String::with_capacity(MAX_KEY_LEN);
        s.push_str("pc_");
        s.push_str(env);
        s.push('_');
        base62::encode_fixed(random, RANDOM_DIGITS, &mut s);
        let sum = base62::encode_u32(crc32fast::hash(s.as_bytes()));
        s.push('_');
        for b in sum {
            s.push(char::from(b));
        }
        Ok(ApiKey {
            material: Secret::new(s),
            env_len: env.len(),
        })
    }

    /// Checks a presented string. Cheap (no hashing beyond CRC32), so a
    /// flood of made-up keys costs almost nothing and never reaches a cache
    /// or the store.
    pub fn parse(input: &str) -> Result<ApiKey, KeyFormatError> {
        let env_len = check_format(input)?;
        Ok(ApiKey {
            material: Secret::new(input.to_owned()),
            env_len,
        })
    }

    /// The full key. Show it once, to its owner, and hash it; never log it.
    pub fn expose(&self) -> &str {
        self.material.expose()
    }

    /// The environment label (`live`, `test`, ...).
    pub fn env(&self) -> &str {
        self.material
            .expose()
            .get(3..3 + self.env_len)
            .unwrap_or("")
    }

    /// The non-secret display prefix: `pc_<env>_` and 6 characters.
    pub fn display_prefix(&self) -> String {
        let end = 3 + self.env_len + 1 + PREFIX_DIGITS;
        self.material.expose().get(..end).unwrap_or("").to_owned()
    }

    /// SHA-256 of the key.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.material.expose())
    }
}

/// Checks shape and checksum without copying; returns the env label length.
pub fn check_format(input: &str) -> Result<usize, KeyFormatError> {
    if input.len() > MAX_KEY_LEN {
        return Err(KeyFormatError::TooLong);
    }
    let bytes = input.as_bytes();
    let rest = bytes.strip_prefix(b"pc_").ok_or(KeyFormatError::Shape)?;
    let env_len = rest
        .iter()
        .position(|b| *b == b'_')
        .ok_or(KeyFormatError::Shape)?;
    let env = std::str::from_utf8(rest.get(..env_len).ok_or(KeyFormatError::Shape)?)
        .map_err(|_| KeyFormatError::Shape)?;
    if !valid_env(env) {
        return Err(KeyFormatError::Env);
    }
    let expected_len = 3 + env_len + 1 + RANDOM_DIGITS + 1 + CHECKSUM_DIGITS;
    if bytes.len() != expected_len {
        return Err(KeyFormatError::Shape);
    }
    let body_end = expected_len - CHECKSUM_DIGITS - 1;
    let (body, tail) = bytes.split_at(body_end);
    let random = body.get(3 + env_len + 1..).ok_or(KeyFormatError::Shape)?;
    let sum = tail.strip_prefix(b"_").ok_or(KeyFormatError::Shape)?;
    if !base62::is_base62(random) || !base62::is_base62(sum) {
        return Err(KeyFormatError::Shape);
    }
    if base62::encode_u32(crc32fast::hash(body)).as_slice() != sum {
        return Err(KeyFormatError::Checksum);
    }
    Ok(env_len)
}

/// What the verifier needs to know about a stored key. Built by the store,
/// cached, and checked against the clock on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// Public key id (`key_…`), safe to log.
    pub key_id: crate::shared_str::SharedStr,
    /// Who the key belongs to; the principal the upstream sees.
    pub owner: crate::shared_str::SharedStr,
    /// Scopes the key carries.
    pub scopes: Scopes,
    /// Unix seconds after which the key is refused (rotation grace included).
    pub expires_at: Option<i64>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// Switched off by an operator; can be switched back on.
    pub disabled: bool,
    /// Remaining uses at the time of the read; `None` = unlimited.
    pub remaining_uses: Option<i64>,
    /// How the uses are refilled, if they are.
    pub refill: Option<crate::quota::RefillPlan>,
    /// The start of the period of the last refill (Unix seconds).
    pub refilled_at: i64,
    /// The key's own rate-limit policy, replacing the route's per-caller
    /// limit.
    pub rate_limit: Option<std::sync::Arc<crate::ratelimit::Policy>>,
}

/// Where a stored key stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Past its expiry (or its rotation grace).
    Expired,
    /// Revoked.
    Revoked,
    /// Disabled by an operator.
    Disabled,
    /// No uses left, for good.
    UsedUp,
    /// No uses left until the next refill.
    Exhausted,
}

impl KeyState {
    /// The reason written to the log (never to the client).
    pub fn reason(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Expired => "key_expired",
            KeyState::Revoked => "key_revoked",
            KeyState::Disabled => "key_disabled",
            KeyState::UsedUp => "key_used_up",
            KeyState::Exhausted => "key_quota_exhausted",
        }
    }
}

impl KeyGrant {
    /// The key's state at `now` (unix seconds). Revocation wins over
    /// everything, then disablement, then expiry, then uses.
    pub fn state(&self, now: i64) -> KeyState {
        if self.revoked_at.is_some_and(|t| t <= now) {
            KeyState::Revoked
        } else if self.disabled {
            KeyState::Disabled
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyState::Expired
        } else if self.remaining_uses.is_some_and(|n| n <= 0) {
            match self.refill {
                None => KeyState::UsedUp,
                Some(r) if r.due(self.refilled_at, now) => KeyState::Active,
                Some(_) => KeyState::Exhausted,
            }
        } else {
            KeyState::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::generate("live", &[7u8; 32]).unwrap()
    }

    #[test]
    fn generated_keys_parse_and_match_the_published_pattern() {
        let k = key();
        let s = k.expose();
        assert_eq!(s.len(), 3 + 4 + 1 + 43 + 1 + 6);
        assert!(s.starts_with("pc_live_"));
        let parsed = ApiKey::parse(s).unwrap();
        assert_eq!(parsed.env(), "live");
        assert_eq!(parsed.hash(), k.hash());
        assert_eq!(parsed.display_prefix().len(), 8 + 6);
        for (i, r) in [[0u8; 32], [255u8; 32], [1u8; 32]].iter().enumerate() {
            let k = ApiKey::generate(if i == 0 { "t" } else { "test9" }, r).unwrap();
            ApiKey::parse(k.expose()).unwrap();
        }
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let k = key();
        let s = k.expose().to_string();
        let alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        for i in 8..s.len() {
            let orig = s.as_bytes()[i];
            if orig == b'_' {
                continue;
            }
            for c in alphabet.bytes().filter(|c| *c != orig).take(5) {
                let mut b = s.clone().into_bytes();
                b[i] = c;
                let t = String::from_utf8(b).unwrap();
                assert!(ApiKey::parse(&t).is_err(), "accepted a changed key at {i}");
            }
        }
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let good = key().expose().to_string();
        let huge = "pc_live_".to_string() + &"a".repeat(10_000);
        let cases: Vec<(String, KeyFormatError)> = vec![
            (String::new(), KeyFormatError::Shape),
            ("pc_".into(), KeyFormatError::Shape),
            (huge, KeyFormatError::TooLong),
            (good.replacen("pc_", "sk_", 1), KeyFormatError::Shape),
            (good.replacen("live", "LIVE", 1), KeyFormatError::Env),
            (good.replacen("live", "", 1), KeyFormatError::Env),
            (
                format!("{}x", &good[..good.len() - 1]),
                KeyFormatError::Checksum,
            ),
            (good[..good.len() - 1].to_string(), KeyFormatError::Shape),
            (good.replacen('A', "é", 1), KeyFormatError::Shape),
            ("pc_live_é".into(), KeyFormatError::Shape),
        ];
        for (input, want) in cases {
            if input == good {
                continue;
            }
            let got = ApiKey::parse(&input).map(|_| ()).unwrap_err();
            if want == KeyFormatError::Shape && got != want {
                // a different refusal is still a refusal
                continue;
            }
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = key();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&k.expose()[8..20]), "{dbg}");
    }

    #[test]
    fn states() {
        let mut g = KeyGrant {
            key_id: "key_x".into(),
            owner: "o".into(),
            scopes: Scopes::parse("a").unwrap(),
            expires_at: Some(100),
            revoked_at: None,
            disabled: false,
            remaining_uses: Some(1),
            refill: None,
            refilled_at: 0,
            rate_limit: None,
        };
        assert_eq!(g.state(99), KeyState::Active);
        assert_eq!(g.state(100), KeyState::Expired);
        g.remaining_uses = Some(0);
        assert_eq!(g.state(50), KeyState::UsedUp);
        // With a daily refill: spent until the next UTC midnight.
        g.refill = Some(crate::quota::RefillPlan {
            every: crate::quota::Refill::Daily,
            amount: 10,
        });
        assert_eq!(g.state(50), KeyState::Exhausted);
        g.expires_at = None;
        assert_eq!(g.state(86_400), KeyState::Active);
        g.refill = None;
        g.disabled = true;
        assert_eq!(g.state(50), KeyState::Disabled);
        g.revoked_at = Some(10);
        assert_eq!(g.state(50), KeyState::Revoked);
    }
}
