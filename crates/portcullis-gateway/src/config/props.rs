//! The config reader, searched: generated files built from every section
//! and key with hostile values never panic, and every refusal is one line
//! naming where.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use super::{explain, load_str};
use proptest::prelude::*;

const KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "listen",
            "admin_listen",
            "trusted_hosts",
            "trusted_proxies",
            "forwarded_header",
            "header_read_timeout",
            "max_header_bytes",
            "max_body_bytes",
            "max_connections",
            "max_connections_per_ip",
            "threads",
            "body_read_timeout",
            "shutdown_grace",
        ],
    ),
    (
        "store",
        &[
            "url",
            "pool_size",
            "connect_timeout",
            "statement_timeout",
            "listen",
            "listen_url",
            "stale_grace",
        ],
    ),
    (
        "credentials",
        &[
            "header_name",
            "query_name",
            "cookie_name",
            "allow_query_keys",
        ],
    ),
    (
        "cache",
        &["sync_interval_ms", "negative_ttl", "max_entries"],
    ),
    ("log", &["level", "format", "access_log"]),
    (
        "upstream",
        &["timeout", "connect_timeout", "max_body_bytes"],
    ),
    (
        "tokens",
        &[
            "issuer",
            "audience",
            "access_ttl",
            "refresh_ttl",
            "algorithm",
            "secret_env",
            "grants",
        ],
    ),
    ("sessions", &["idle_ttl", "absolute_ttl", "same_site"]),
    (
        "rate_limit",
        &[
            "backend",
            "on_backend_error",
            "default",
            "auth_endpoints",
            "max_counters",
        ],
    ),
    (
        "cors",
        &[
            "allow_origins",
            "allow_methods",
            "allow_headers",
            "expose_headers",
            "allow_credentials",
            "max_age",
        ],
    ),
    ("tls", &["cert", "key", "redirect_http_from", "hsts"]),
    ("security_headers", &["overwrite"]),
];
const ROUTE_KEYS: &[&str] = &[
    "path",
    "methods",
    "upstream",
    "auth",
    "scopes",
    "timeout",
    "rate_limit",
    "rate_limit_by",
    "cost",
    "max_body_bytes",
    "forward_override_headers",
    "cors",
];
const VALUES: &[&str] = &[
    "\"\"",
    "\"x\"",
    "0",
    "-1",
    "18446744073709551616",
    "1e308",
    "true",
    "[]",
    "[\"\"]",
    "\"/**\"",
    "\"/a/../b\"",
    "\"/a;b\"",
    "\"/%2F\"",
    "\"/W/**\"",
    "\"/w/**\"",
    "\"demo\"",
    "\"http://127.0.0.1:1\"",
    "\"http://u:p@h:1\"",
    "\"https://h\"",
    "\"ftp://h\"",
    "\"127.0.0.1:0\"",
    "\"[::1]:99999\"",
    "\"0s\"",
    "\"99999999999999d\"",
    "\"1ms\"",
    "\"5m\"",
    "\"100/minute\"",
    "\"0/second\"",
    "\"5000/second\"",
    "\"1/day; 2/day burst 0\"",
    "[\"api_key_header\", \"bearer\"]",
    "[\"nope\"]",
    "[\"GET\", \"BREW\"]",
    "[\"*\"]",
    "[\"null\"]",
    "[\"https://a.example\"]",
    "[\"127.0.0.1/33\"]",
    "[\"::/0\"]",
    "\"sqlite://\"",
    "\"postgres://u:secret@h/db\"",
    "\"redis://\"",
    "\"deny\"",
    "\"\\u0000\"",
    "\"caf\u{e9}\"",
    "{ allow_origins = [\"*\"], allow_credentials = true }",
];

fn line() -> impl Strategy<Value = String> {
    (
        prop::sample::select(KEYS),
        any::<prop::sample::Index>(),
        prop::sample::select(VALUES),
    )
        .prop_map(|((t, ks), i, v)| format!("[{t}]\n{} = {v}\n", i.get(ks)))
}

fn route() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(ROUTE_KEYS),
            prop::sample::select(VALUES),
        ),
        0..6,
    )
    .prop_map(|kv| {
        let mut s = "[[routes]]\n".to_owned();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in kv {
            if seen.insert(k) {
                s.push_str(&format!("{k} = {v}\n"));
            }
        }
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn any_config_is_read_or_refused_in_one_line(
        parts in prop::collection::vec(prop_oneof![line(), route()], 0..8),
    ) {
        // A table may appear once in TOML: keep the first of each.
        let mut seen = std::collections::HashSet::new();
        let text: String = parts
            .into_iter()
            .filter(|p| p.starts_with("[[") || seen.insert(p.lines().next().unwrap_or("").to_owned()))
            .collect();
        match load_str(&text, "generated.toml", &[]) {
            Ok(c) => {
                let _ = explain(&c);
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(!msg.contains('\n'), "two lines for {:?}: {}", text, msg);
                prop_assert!(!e.path.is_empty(), "no place named for {:?}: {}", text, msg);
                prop_assert!(!msg.contains("secret@"), "a password echoed: {}", msg);
            }
        }
    }
}
