//! What the admin API accepts in each request member, stated once: the
//! OpenAPI document's schemas ([`crate::admin::openapi`]) and the handlers'
//! checks are both made from these rules, so a request the document
//! allows is never refused with 422, and one it refuses never gets
//! through.
//!
//! Where the domain's own check is laxer than the rule (durations and
//! rate policies have arithmetic limits no pattern can state, so the
//! admin API takes a form of them that is always within those limits),
//! the handler checks the rule first. Unit tests check that every value a
//! rule accepts passes the domain's check too, on strings generated from
//! the rule's own patterns.
//!
//! Patterns are written where ECMA-262 (the dialect OpenAPI names), Rust's
//! `regex` (this server) and Python's `re` agree: explicit character
//! classes (no `\s`, `\d`, `\w`, `\p{…}`), `^…$` around a whole-value
//! rule (a JSON Schema `pattern` is a search), no lookaround or
//! backreferences.

use regex::Regex;
use serde_json::{Value, json};
use std::sync::LazyLock;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

/// Control characters (`char::is_control`, Unicode category Cc), as the
/// inside of a character class.
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";
/// What Rust's `trim` removes (Unicode White_Space) that is not a control
/// character, as the inside of a character class.
const SPACE: &str = r" \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// One character of a scope token (RFC 6749 §3.3 without the comma, which
/// separates scopes here): `!`, `#`-`+`, `-`-`[`, `]`-`~`.
const SCOPE_CHAR: &str = r"[!#-+\--\[\]-~]";
/// The grant types a client may have: the identity service's list.
pub(crate) use crate::auth::identity::GRANTS;
/// The refill periods, as [`portcullis_core::quota::Refill::parse`] reads
/// them.
pub(crate) const REFILLS: [&str; 4] = ["day", "month", "daily", "monthly"];

/// A rule for a string member.
pub(crate) struct Text {
    /// Fewest characters (Unicode scalar values, as JSON Schema counts).
    pub(crate) min_chars: usize,
    /// Most characters, if bounded.
    pub(crate) max_chars: Option<usize>,
    /// Patterns the value must each match (searched, as JSON Schema
    /// does), with their compiled form.
    patterns: Vec<(String, Option<Regex>)>,
    /// The rule for people: completes "`member`: must be …".
    pub(crate) says: &'static str,
}

impl Text {
    fn new(
        min_chars: usize,
        max_chars: Option<usize>,
        patterns: &[&str],
        says: &'static str,
    ) -> Text {
        Text {
            min_chars,
            max_chars,
            patterns: patterns
                .iter()
                .map(|p| ((*p).to_owned(), Regex::new(p).ok()))
                .collect(),
            says,
        }
    }

    /// The patterns, as written in the document.
    pub(crate) fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().map(|(p, _)| p.as_str())
    }

    /// Whether `v` follows the rule.
    pub(crate) fn accepts(&self, v: &str) -> bool {
        let n = v.chars().count();
        n >= self.min_chars
            && self.max_chars.is_none_or(|m| n <= m)
            && self.patterns.iter().all(|(p, re)| match re {
                Some(re) => re.is_match(v),
                None => {
                    // A pattern that does not compile is a bug (a unit
                    // test compiles every one); refuse rather than pass.
                    tracing::error!(pattern = %p, "admin API rule pattern does not compile");
                    false
                }
            })
    }

    /// `Ok` if `v` follows the rule, else the `detail` naming `member`.
    pub(crate) fn check(&self, member: &str, v: &str) -> Result<(), String> {
        if self.accepts(v) {
            Ok(())
        } else {
            Err(format!("{member}: must be {}", self.says))
        }
    }

    /// The JSON Schema of a member following this rule; `nullable` when
    /// JSON `null` is taken as leaving the member out.
    pub(crate) fn schema(&self, nullable: bool, description: &str) -> Schema {
        let mut patterns = self.patterns();
        let mut b = ObjectBuilder::new()
            .schema_type(string_type(nullable))
            .description(Some(description))
            .pattern(patterns.next());
        if self.min_chars > 0 {
            b = b.min_length(Some(self.min_chars));
        }
        b = b.max_length(self.max_chars);
        let more: Vec<Value> = patterns.map(|p| json!({ "pattern": p })).collect();
        if !more.is_empty() {
            b = b.extensions(Some(keywords([("allOf", Value::Array(more))])));
        }
        Schema::Object(b.build())
    }
}

fn string_type(nullable: bool) -> SchemaType {
    if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    }
}

/// JSON Schema keywords utoipa's builders have no field for. An
/// extension map is written flattened into its schema object, so these
/// land as the keywords themselves.
pub(crate) fn keywords<const N: usize>(kw: [(&str, Value); N]) -> Extensions {
    Extensions::from_iter(kw)
}

/// A schema whose value is one of `values` (or `null`, when `nullable`).
pub(crate) fn choice(values: &[&str], nullable: bool, description: &str) -> Schema {
    let mut enum_values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
    if nullable {
        enum_values.push(Value::Null);
    }
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(string_type(nullable))
            .enum_values(Some(enum_values))
            .description(Some(description))
            .build(),
    )
}

/// Key names and owners, client names: 1-128 characters, not only spaces,
/// no control characters ([`crate::auth::keys::check_label`],
/// [`crate::auth::identity::Identity::add_client`]).
pub(crate) static LABEL: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        1,
        Some(128),
        &[&format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$")],
        "1-128 characters, not only spaces, with no control characters",
    )
});

/// User names: 1-64 characters, no colon (Basic splits on it), control
/// characters or surrounding spaces ([`crate::auth::identity::check_username`]).
pub(crate) static USERNAME: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        1,
        Some(64),
        &[&format!(
            "^[^{CONTROL}{SPACE}:](?:[^{CONTROL}:]*[^{CONTROL}{SPACE}:])?$"
        )],
        "1-64 characters, with no colon, control characters or surrounding spaces",
    )
});

/// New passwords ([`crate::auth::password::check_length`]).
pub(crate) static PASSWORD: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        crate::auth::password::MIN_PASSWORD_CHARS,
        Some(crate::auth::password::MAX_PASSWORD_CHARS),
        &[],
        "8-1024 characters",
    )
});

/// The environment label in a key ([`portcullis_core::key::valid_env`]).
pub(crate) static ENV: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        1,
        Some(16),
        &["^[a-z0-9]{1,16}$"],
        "1-16 lowercase letters or digits, like live or test",
    )
});

/// A duration the admin API takes: parts in the order weeks, days, hours,
/// minutes, seconds, each at most once, with at most 3, 4, 5, 6 and 7
/// digits. The largest, `999w9999d99999h999999m9999999s`, is about 60
/// years, within [`portcullis_core::time::parse_duration`]'s 100.
const DURATION: &str =
    "^(?:[0-9]{1,3}w)?(?:[0-9]{1,4}d)?(?:[0-9]{1,5}h)?(?:[0-9]{1,6}m)?(?:[0-9]{1,7}s)?$";

/// A rotation's grace: a duration, zero allowed.
pub(crate) static GRACE: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        1,
        Some(30),
        &[DURATION],
        "a duration like 24h, 30m or 0s (end now): a whole number and a unit (w, d, h, m, s), parts in that order",
    )
});

/// A key's lifetime: a duration that is not zero.
pub(crate) static LIFETIME: LazyLock<Text> = LazyLock::new(|| {
    // Not zero: some digit is not 0 (the second pattern is a search).
    Text::new(
        1,
        Some(30),
        &[DURATION, "[1-9]"],
        "a duration like 30d, 24h or 1h30m, not zero: a whole number and a unit (w, d, h, m, s), parts in that order",
    )
});

/// One limit of a rate policy the admin API takes: the count has at most
/// 7 digits, so every limit the pattern takes parses however many units
/// the period has: the limiter counts whole nanoseconds per request and
/// refuses a rate that rounding would raise by over 1 %, which a count
/// under 10^7 never reaches over a period of a second or more (the
/// remainder is below the count, under 1 % of 10^9 ns). The period has at
/// most 366 units (a day unit's most); the burst has at most 9 digits.
fn rate_limit_pattern() -> String {
    let mult = "(?:[1-9][0-9]?|[12][0-9]{2}|3[0-5][0-9]|36[0-6])";
    let count = "[1-9][0-9]{0,6}";
    let one = [
        "(?:seconds?|secs?)",
        "(?:minutes?|mins?)",
        "hours?",
        "days?",
    ]
    .iter()
    .map(|unit| format!("{count}(?: ?/ ?| per )(?:{mult} )?{unit}"))
    .collect::<Vec<_>>()
    .join("|");
    let limit = format!("(?:{one})(?: burst [1-9][0-9]{{0,8}})?");
    format!("^{limit}(?: ?[;,] ?{limit}){{0,7}}$")
}

/// A key's rate policy ([`crate::auth::keys::check_rate`]).
pub(crate) static RATE_LIMIT: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        1,
        Some(256),
        &[&rate_limit_pattern()],
        "a rate policy like 100/minute, 5 per 10 seconds or \"10/second burst 20; 1000/hour\": at most 8 limits, units second, minute, hour or day (at most 366 of them), a count of at most 7 digits, in lowercase, at most 256 characters",
    )
});

/// Scopes as one string: scope tokens separated by spaces or commas
/// (empty: none).
pub(crate) static SCOPES: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        0,
        None,
        &[&format!(
            "^[ ,]*(?:{SCOPE_CHAR}{{1,128}}(?:[ ,]+{SCOPE_CHAR}{{1,128}})*)?[ ,]*$"
        )],
        "scopes separated by spaces or commas, each 1-128 printable ASCII characters other than space, comma, quote or backslash",
    )
});

/// One scope of a list.
pub(crate) static SCOPE: LazyLock<Text> = LazyLock::new(|| {
    Text::new(
        1,
        Some(128),
        &[&format!("^{SCOPE_CHAR}{{1,128}}$")],
        "a single scope: 1-128 printable ASCII characters other than space, comma, quote or backslash",
    )
});

/// Grant types as one string, separated by spaces or commas (empty: the
/// default).
pub(crate) static GRANT_LIST: LazyLock<Text> = LazyLock::new(|| {
    let g = format!("(?:{})", GRANTS.join("|"));
    Text::new(
        0,
        None,
        &[&format!("^[ ,]*(?:{g}(?:[ ,]+{g})*)?[ ,]*$")],
        "grant types (client_credentials, refresh_token, password) separated by spaces or commas",
    )
});

/// The schema of scopes: one string or a list of single scopes.
pub(crate) fn scope_list_schema() -> RefOr<Schema> {
    one_string_or_list(
        SCOPES.schema(
            false,
            "Space- or comma-separated (`\"data:read data:write\"`); empty: none.",
        ),
        SCOPE.schema(false, "One scope."),
        "Scopes: one string, space- or comma-separated, or a list of single scopes. A scope is 1-128 printable ASCII characters other than space, comma, `\"` and `\\`.",
    )
}

/// The schema of grant types: one string or a list.
pub(crate) fn grant_list_schema() -> RefOr<Schema> {
    one_string_or_list(
        GRANT_LIST.schema(
            false,
            "Space- or comma-separated (`\"client_credentials refresh_token\"`); empty: the default.",
        ),
        choice(&GRANTS, false, "One grant type."),
        "Grant types (`client_credentials`, `refresh_token`, `password`): one string, space- or comma-separated, or a list; default `client_credentials refresh_token`.",
    )
}

fn one_string_or_list(string: Schema, item: Schema, description: &str) -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(string)
            .item(ArrayBuilder::new().items(RefOr::T(item)))
            .description(Some(description))
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::string::string_regex;

    fn all() -> Vec<(&'static str, &'static Text)> {
        vec![
            ("LABEL", &LABEL),
            ("USERNAME", &USERNAME),
            ("PASSWORD", &PASSWORD),
            ("ENV", &ENV),
            ("GRACE", &GRACE),
            ("LIFETIME", &LIFETIME),
            ("RATE_LIMIT", &RATE_LIMIT),
            ("SCOPES", &SCOPES),
            ("SCOPE", &SCOPE),
            ("GRANT_LIST", &GRANT_LIST),
        ]
    }

    #[test]
    fn every_pattern_compiles() {
        for (name, rule) in all() {
            for (p, re) in &rule.patterns {
                assert!(re.is_some(), "{name}: {p}");
            }
        }
    }

    /// Hand-picked values each side of each rule.
    #[test]
    fn rules_take_and_refuse() {
        let cases: &[(&Text, &[&str], &[&str])] = &[
            (
                &LABEL,
                &["svc", " a ", "é", &"é".repeat(128), "a\u{3000}b"],
                &[
                    "",
                    " ",
                    "\u{3000}\u{a0}",
                    "a\nb",
                    "a\u{85}",
                    &"a".repeat(129),
                ],
            ),
            (
                &USERNAME,
                &["alice", "a b", &"ü".repeat(64)],
                &["", " a", "a ", "a:b", "a\tb", "\u{2003}a", &"a".repeat(65)],
            ),
            (&ENV, &["live", "t3"], &["", "Live", "a-b", &"a".repeat(17)]),
            (
                &GRACE,
                &["0s", "24h", "1h30m", "2w", "999w9999d99999h999999m9999999s"],
                &["", "1", "h", "30m1h", "1 h", " 1h", "1h\n", "1000w", "-1h"],
            ),
            (
                &LIFETIME,
                &["30d", "1s", "0d1s"],
                &["0s", "0d0h", "00m", ""],
            ),
            (
                &RATE_LIMIT,
                &[
                    "100/minute",
                    "10/second; 1000/hour",
                    "5 per 10 seconds",
                    "1 / hour",
                    "2/minutes",
                    "1000/second burst 100000",
                    "8640000/day",
                    "5000/second",
                    "100000/minute",
                    "9999999/second burst 999999999",
                    "5/366 days",
                    "1/sec,2/min",
                ],
                &[
                    "",
                    "0/minute",
                    "10000000/second",
                    "100/Minute",
                    "10/fortnight",
                    "10",
                    "5/367 days",
                    "100/minute burst 0",
                    "1/s;1/s;1/s;1/s;1/s;1/s;1/s;1/s;1/s",
                    "100/minute;",
                    "\t100/minute",
                ],
            ),
            (
                &SCOPES,
                &["", "a b", "a,b", " ,a,, b ", &"x".repeat(128)],
                &["a\tb", "\ta", "a\"b", "é", &"x".repeat(129)],
            ),
            (&SCOPE, &["data:read"], &["", "a b", "a,b", "\ta"]),
            (
                &GRANT_LIST,
                &["", "password", "client_credentials, refresh_token"],
                &["\tpassword", "implicit", "passwordpassword"],
            ),
        ];
        for (rule, good, bad) in cases {
            for v in *good {
                assert!(rule.accepts(v), "{v:?} ({})", rule.says);
            }
            for v in *bad {
                assert!(!rule.accepts(v), "{v:?} ({})", rule.says);
            }
        }
    }

    /// Strings drawn from a rule's first pattern, kept when the rule takes
    /// them.
    fn drawn(rule: &'static Text) -> impl Strategy<Value = String> {
        // The generator draws whole strings, and takes no anchors.
        let p = rule.patterns().next().unwrap_or(".*");
        let p = p.strip_prefix('^').unwrap_or(p);
        let p = p.strip_suffix('$').unwrap_or(p);
        string_regex(p)
            .unwrap()
            .prop_filter("the rule takes it", move |v| rule.accepts(v))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn what_the_label_rule_takes_the_domain_takes(v in drawn(&LABEL)) {
            prop_assert!(crate::auth::keys::check_label("name", &v).is_ok(), "{:?}", v);
        }

        #[test]
        fn what_the_username_rule_takes_the_domain_takes(v in drawn(&USERNAME)) {
            prop_assert!(crate::auth::identity::check_username(&v).is_ok(), "{:?}", v);
        }

        #[test]
        fn what_the_env_rule_takes_the_domain_takes(v in drawn(&ENV)) {
            prop_assert!(portcullis_core::key::valid_env(&v), "{:?}", v);
        }

        #[test]
        fn what_the_duration_rules_take_parses(v in drawn(&GRACE)) {
            let d = portcullis_core::time::parse_duration(&v);
            prop_assert!(d.is_ok(), "{:?}", v);
            prop_assert_eq!(LIFETIME.accepts(&v), d.is_ok_and(|d| d > 0), "{:?}", v);
        }

        #[test]
        fn what_the_rate_rule_takes_parses(v in drawn(&RATE_LIMIT)) {
            prop_assert!(crate::auth::keys::check_rate(&v).is_ok(), "{:?}", v);
        }

        #[test]
        fn what_the_scope_rules_take_parses(v in drawn(&SCOPES), one in drawn(&SCOPE)) {
            prop_assert!(portcullis_core::Scopes::parse(&v).is_ok(), "{:?}", v);
            prop_assert!(portcullis_core::Scopes::from_iter_checked([one.as_str()]).is_ok(), "{:?}", one);
        }

        /// The reverse, for the rules the domain checks alone: what the
        /// domain takes, the rule takes (on arbitrary strings, with the
        /// interesting characters made likely).
        #[test]
        fn the_domain_takes_nothing_the_label_and_username_rules_refuse(
            v in "[a :\\t\\n\u{85}\u{a0}\u{3000}é\u{7f}]{0,70}"
        ) {
            prop_assert_eq!(crate::auth::keys::check_label("name", &v).is_ok(), LABEL.accepts(&v), "{:?}", v);
            prop_assert_eq!(crate::auth::identity::check_username(&v).is_ok(), USERNAME.accepts(&v), "{:?}", v);
        }
    }

    #[test]
    fn long_labels_count_characters() {
        let v = "é".repeat(128);
        assert!(LABEL.accepts(&v));
        assert!(crate::auth::keys::check_label("name", &v).is_ok());
        let v = "é".repeat(129);
        assert!(!LABEL.accepts(&v));
        assert!(crate::auth::keys::check_label("name", &v).is_err());
        // Passwords too: the rule and the hashing path agree at each edge,
        // in characters of any width.
        for c in ["x", "é", "😀"] {
            for n in [0, 7, 8, 1024, 1025] {
                let v = c.repeat(n);
                assert_eq!(
                    PASSWORD.accepts(&v),
                    crate::auth::password::check_length(&v, true).is_ok(),
                    "{n} × {c}"
                );
            }
        }
    }
}
