//! What an admission decision came to, in a small fixed set of names: the
//! label metrics count by, the column per-key analytics keep, the series
//! the console draws. The log keeps the precise reason (`key_revoked`,
//! `jwt_wrong_audience`, …); an outcome is that reason's family, so the
//! set of label values stays bounded whatever reasons are added later.

use crate::ErrorCode;

macro_rules! outcomes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// The family of an admission decision.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Outcome {
            $( $(#[$doc])* $variant, )*
        }

        impl Outcome {
            /// Every outcome, in table order; [`Outcome::index`] is the
            /// position here.
            pub const ALL: &'static [Outcome] = &[$(Outcome::$variant,)*];

            /// The outcome as written in labels, bodies and docs.
            pub const fn as_str(self) -> &'static str {
                match self { $(Outcome::$variant => $name,)* }
            }

            /// The outcome named `s`, as [`Outcome::as_str`] writes it.
            pub fn parse(s: &str) -> Option<Outcome> {
                match s { $($name => Some(Outcome::$variant),)* _ => None }
            }
        }
    };
}

outcomes! {
    /// Admitted.
    Valid = "valid",
    /// No credential of the route's schemes was presented.
    Missing = "missing",
    /// A credential that cannot be one: bad checksum, bad encoding, a
    /// token that does not parse.
    Malformed = "malformed",
    /// Well-formed, but no such key, session or signing key.
    Unknown = "unknown",
    /// Revoked (a key, a session ended, a token's subject revoked).
    Revoked = "revoked",
    /// Past its expiry (a key, a token, a session, idle too long).
    Expired = "expired",
    /// Disabled (a key, or the user behind it).
    Disabled = "disabled",
    /// A key whose uses are spent for good.
    UsedUp = "used_up",
    /// Presented and verified, but something else about it is wrong: a
    /// token's signature, issuer or audience, a password.
    Invalid = "invalid",
    /// More than one credential was presented.
    Ambiguous = "ambiguous",
    /// The caller lacks a scope the route requires.
    InsufficientScope = "insufficient_scope",
    /// A cookie-carried unsafe request failed the CSRF checks.
    CsrfFailed = "csrf_failed",
    /// Over a rate limit.
    RateLimited = "rate_limited",
    /// The key's quota is spent until its next refill.
    QuotaExceeded = "quota_exceeded",
    /// Too many failed sign-ins: the account or address is locked out.
    LockedOut = "locked_out",
    /// A credential sent over plain HTTP to a gateway that serves HTTPS.
    HttpsRequired = "https_required",
    /// The store or the shared rate limiter could not decide.
    Unavailable = "unavailable",
    /// Any other refusal.
    Other = "other",
}

impl Outcome {
    /// The outcome of a decision logged as `reason` and answered with
    /// `code` (`None`: admitted). The code decides the family; the reason
    /// only refines an invalid credential into what was wrong with it.
    pub fn of(code: Option<ErrorCode>, reason: &str) -> Outcome {
        let Some(code) = code else {
            return Outcome::Valid;
        };
        match code {
            ErrorCode::NotAuthenticated => Outcome::Missing,
            ErrorCode::InvalidCredentials => Outcome::of_invalid(reason),
            ErrorCode::AmbiguousCredentials => Outcome::Ambiguous,
            ErrorCode::InsufficientScope => Outcome::InsufficientScope,
            ErrorCode::CsrfFailed => Outcome::CsrfFailed,
            ErrorCode::TooManyAttempts => Outcome::LockedOut,
            ErrorCode::RateLimited => Outcome::RateLimited,
            ErrorCode::QuotaExceeded => Outcome::QuotaExceeded,
            ErrorCode::HttpsRequired => Outcome::HttpsRequired,
            ErrorCode::StoreUnavailable | ErrorCode::LimiterUnavailable => Outcome::Unavailable,
            _ => Outcome::Other,
        }
    }

    /// What was wrong with a credential refused as invalid, by its log
    /// reason (the `reason()`s of `KeyState`, `BasicError`, the token and
    /// session checks).
    fn of_invalid(reason: &str) -> Outcome {
        match reason {
            "bad_checksum"
            | "malformed_key"
            | "unreadable_credential"
            | "jwt_malformed"
            | "jwt_too_large"
            | "jwt_crit"
            | "session_malformed"
            | "unsupported_token"
            | "unsupported_scheme" => Outcome::Malformed,
            r if r.starts_with("basic_") => Outcome::Malformed,
            "unknown_key" | "jwt_unknown_kid" | "session_unknown" | "unknown_user" => {
                Outcome::Unknown
            }
            "key_revoked" | "jwt_subject_revoked" | "session_ended" | "token_revoked" => {
                Outcome::Revoked
            }
            "key_expired" | "jwt_expired" | "session_expired" | "session_idle" => Outcome::Expired,
            "key_disabled" | "session_user_disabled" | "user_disabled" => Outcome::Disabled,
            "key_used_up" => Outcome::UsedUp,
            "key_quota_exhausted" => Outcome::QuotaExceeded,
            _ => Outcome::Invalid,
        }
    }

    /// The position in [`Outcome::ALL`]: for tables indexed by outcome.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether this is a refusal.
    pub const fn is_refusal(self) -> bool {
        !matches!(self, Outcome::Valid)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyState;

    #[test]
    fn names_round_trip_and_index_is_the_position() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(Outcome::parse(o.as_str()), Some(*o));
            assert_eq!(o.index(), i);
        }
        assert_eq!(Outcome::parse("Valid"), None);
    }

    #[test]
    fn key_states_map_to_their_outcome() {
        let code = Some(ErrorCode::InvalidCredentials);
        assert_eq!(
            Outcome::of(code, KeyState::Revoked.reason()),
            Outcome::Revoked
        );
        assert_eq!(
            Outcome::of(code, KeyState::Expired.reason()),
            Outcome::Expired
        );
        assert_eq!(
            Outcome::of(code, KeyState::Disabled.reason()),
            Outcome::Disabled
        );
        assert_eq!(
            Outcome::of(code, KeyState::UsedUp.reason()),
            Outcome::UsedUp
        );
        assert_eq!(Outcome::of(code, "unknown_key"), Outcome::Unknown);
        assert_eq!(Outcome::of(code, "bad_checksum"), Outcome::Malformed);
        assert_eq!(Outcome::of(code, "basic_not_base64"), Outcome::Malformed);
        assert_eq!(Outcome::of(code, "jwt_wrong_audience"), Outcome::Invalid);
        assert_eq!(Outcome::of(None, "allowed"), Outcome::Valid);
        assert_eq!(
            Outcome::of(Some(ErrorCode::QuotaExceeded), KeyState::Exhausted.reason()),
            Outcome::QuotaExceeded
        );
        assert_eq!(
            Outcome::of(Some(ErrorCode::TooManyAttempts), "locked_out"),
            Outcome::LockedOut
        );
    }

    #[test]
    fn every_error_code_has_an_outcome_and_only_admission_is_valid() {
        for c in ErrorCode::ALL {
            assert!(Outcome::of(Some(*c), "anything").is_refusal(), "{c:?}");
        }
    }

    proptest::proptest! {
        /// Whatever reason a future check logs, the outcome is one of the
        /// fixed set (labels stay bounded), and only an admission is valid.
        #[test]
        fn any_reason_lands_in_the_fixed_set(
            reason in "\\PC{0,40}",
            code in proptest::option::of(0..ErrorCode::ALL.len()),
        ) {
            let o = Outcome::of(code.map(|i| ErrorCode::ALL[i]), &reason);
            proptest::prop_assert!(Outcome::ALL.contains(&o));
            proptest::prop_assert_eq!(o == Outcome::Valid, code.is_none());
        }
    }
}
