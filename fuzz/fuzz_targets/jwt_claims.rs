//! Access-token rules: `token::check_typ` and `token::check_claims` on
//! claims deserialised with serde_json from the input.
//!
//! Input: a JSON object: the token's claims (`iss`, `sub`, `aud`, `exp`,
//! `iat`, `nbf`, ...) and, in the same object, the JOSE header's `typ` (the
//! claims ignore unknown members). The signature is checked elsewhere:
//! these are the rules a verified token must still pass.
//!
//! Invariants:
//! - `check_typ` accepts exactly `at+jwt` and `application/at+jwt`, in any
//!   ASCII case;
//! - accepted claims are for our issuer and audience, have a subject, and
//!   are inside their time window with at most the 60 s leeway;
//! - leeway is clamped to 0..=60: a negative one acts as 0, a larger one
//!   as 60, and a larger leeway never refuses what a smaller one accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::token::{self, AccessClaims, ClaimError, Expect, MAX_LEEWAY_SECS};

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "portcullis";

/// Clock readings tried: the epoch, today-ish, and 2100. A clock is not
/// attacker input, so these stay in the range a real clock reads.
const NOWS: [i64; 4] = [0, 1_700_000_000, 1_767_225_600, 4_102_444_800];

const LEEWAYS: [i64; 7] = [i64::MIN, -5, 0, 1, 30, 60, 3600];

fuzz_target!(|data: &[u8]| {
    let value: Option<serde_json::Value> = serde_json::from_slice(data).ok();
    let typ = value
        .as_ref()
        .and_then(|v| v.get("typ"))
        .and_then(|t| t.as_str());
    check_typ(typ);
    // A bare string as the input is a typ on its own.
    if let Some(serde_json::Value::String(s)) = &value {
        check_typ(Some(s));
    }

    let Ok(claims) = serde_json::from_slice::<AccessClaims>(data) else {
        return;
    };
    let mut nows: Vec<i64> = NOWS.to_vec();
    // Clock readings next to the token's own times, where they are
    // readings a clock could give.
    for t in [Some(claims.exp), claims.nbf, claims.iat]
        .into_iter()
        .flatten()
    {
        for d in [-61, -60, -1, 0, 1, 60, 61] {
            if let Some(n) = t.checked_add(d).filter(|n| (0..=1 << 40).contains(n)) {
                nows.push(n);
            }
        }
    }
    for now in nows {
        let mut previous: Option<Result<(), ClaimError>> = None;
        for leeway in LEEWAYS {
            let e = Expect {
                issuer: ISSUER,
                audience: AUDIENCE,
                leeway,
            };
            let got = token::check_claims(&claims, &e, now);
            let effective = leeway.clamp(0, MAX_LEEWAY_SECS);
            let clamped = token::check_claims(
                &claims,
                &Expect {
                    leeway: effective,
                    ..e.clone()
                },
                now,
            );
            assert_eq!(got, clamped, "leeway {leeway} is not clamped");
            if got.is_ok() {
                assert!(claims.exp > now - effective);
                assert!(claims.nbf.is_none_or(|t| t <= now + effective));
                assert!(claims.iat.is_none_or(|t| t <= now + effective));
                assert_eq!(claims.iss, ISSUER);
                assert!(claims.aud.contains(AUDIENCE));
                assert!(!claims.sub.is_empty());
            }
            if previous == Some(Ok(())) {
                assert_eq!(got, Ok(()), "a larger leeway refused at {now}");
            }
            previous = Some(got);
        }
    }
    // Another issuer or audience is always refused.
    for (issuer, audience) in [(AUDIENCE, AUDIENCE), (ISSUER, ISSUER)] {
        let e = Expect {
            issuer,
            audience,
            leeway: 0,
        };
        if claims.iss != issuer || !claims.aud.contains(audience) {
            assert!(token::check_claims(&claims, &e, NOWS[1]).is_err());
        }
    }
});

fn check_typ(typ: Option<&str>) {
    let want = typ.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == "at+jwt" || t == "application/at+jwt"
    });
    assert_eq!(
        token::check_typ(typ).is_ok(),
        want,
        "check_typ({typ:?}) is wrong"
    );
}
