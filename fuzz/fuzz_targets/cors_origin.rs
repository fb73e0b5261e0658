//! CORS: `Cors::allows_origin`, `cors::single_origin`, `Cors::preflight`
//! and `Cors::apply` under fixed policies built from config, with
//! arbitrary request (and upstream response) headers.
//!
//! Input: lines. `Name: value` lines are request headers (`Origin`,
//! `Access-Control-Request-Method`, `-Headers`, `-Private-Network`, ...)
//! until a line `---`; after it they are the upstream's response headers
//! (say a reflected `Access-Control-Allow-Origin` and a `Vary`). A first
//! line `origins: a b c` also builds a policy from those origins, to check
//! that the normalised form of an origin is a fixed point.
//!
//! Invariants (the exact-origin rule):
//! - under a list policy, an allowed origin is byte-equal to one of the
//!   configured origins;
//! - `Access-Control-Allow-Origin` is set at most once, only for the
//!   request's single `Origin`, equal to it (or `*` under the any-origin
//!   policy); `-Allow-Credentials` only with it, and only when configured;
//!   a preflight is accepted only with it;
//! - the upstream's `Access-Control-Allow-*` / `-Expose-Headers` never
//!   survive for a refused origin;
//! - under a list policy every answer says `Vary: Origin` (or `*`);
//! - an origin a fuzzed config allows is allowed again by a config that
//!   lists only it (normalising twice changes nothing).
#![no_main]

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis_core::cors::{Cors, CorsConfig, single_origin};
use portcullis_fuzz::{header_line, lines, text};
use std::sync::OnceLock;

/// The configured origins, already in the serialised form browsers send.
const ORIGINS: [&str; 5] = [
    "https://example.com",
    "https://app.example.com:8443",
    "http://[::1]:8080",
    "http://127.0.0.1:3000",
    "https://xn--bcher-kva.example",
];

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

struct Policies {
    strict: Cors,
    open: Cors,
}

fn policies() -> &'static Policies {
    static P: OnceLock<Policies> = OnceLock::new();
    P.get_or_init(|| {
        let strict = Cors::new(&CorsConfig {
            allow_origins: strings(&ORIGINS),
            allow_methods: strings(&["GET", "POST", "PATCH"]),
            allow_headers: strings(&["X-Example", "Authorization", "X-API-Key"]),
            expose_headers: strings(&["X-Request-Id", "RateLimit"]),
            allow_credentials: true,
            allow_private_network: true,
            max_age: Some(3600),
        });
        let open = Cors::new(&CorsConfig {
            allow_origins: strings(&["*"]),
            allow_methods: strings(&["*"]),
            allow_headers: strings(&["*"]),
            expose_headers: strings(&["*"]),
            ..CorsConfig::default()
        });
        match (strict, open) {
            (Ok(strict), Ok(open)) => {
                for o in ORIGINS {
                    assert!(strict.allows_origin(o.as_bytes()), "{o} not allowed");
                }
                Policies { strict, open }
            }
            (a, b) => panic!("fixed policies refused: {:?} {:?}", a.err(), b.err()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let p = policies();
    let mut req = HeaderMap::new();
    let mut upstream = HeaderMap::new();
    let mut in_response = false;
    let mut config_origins: Option<Vec<String>> = None;
    for (i, line) in lines(data).enumerate() {
        if line == b"---" {
            in_response = true;
        } else if i == 0
            && let Some(list) = line.strip_prefix(b"origins:")
        {
            config_origins = Some(
                text(list)
                    .split(' ')
                    .filter(|o| !o.is_empty())
                    .take(4)
                    .map(str::to_owned)
                    .collect(),
            );
        } else if let Some((n, v)) = header_line(line) {
            if in_response {
                upstream.append(n, v);
            } else {
                req.append(n, v);
            }
        }
    }

    // The exact-origin rule, on every Origin line as given.
    for o in req.get_all(ORIGIN) {
        if p.strict.allows_origin(o.as_bytes()) {
            assert!(
                ORIGINS.iter().any(|c| c.as_bytes() == o.as_bytes()),
                "allowed a look-alike origin {o:?}"
            );
        }
        assert!(p.open.allows_origin(o.as_bytes()));
    }
    let origin = single_origin(&req);
    assert_eq!(origin.is_some(), req.get_all(ORIGIN).iter().count() == 1);

    for (cors, list, credentials) in [(&p.strict, true, true), (&p.open, false, false)] {
        // Preflight.
        let mut out = upstream.clone();
        let verdict = cors.preflight(&req, &mut out);
        let acao = check_allow_origin(&out, origin, list, credentials);
        assert_eq!(verdict.is_err_and(|r| r.origin), acao.is_none());
        if verdict.is_ok() {
            assert!(
                acao.is_some(),
                "preflight accepted without an allowed origin"
            );
        }
        if let Err(r) = verdict {
            assert!(!r.is_empty());
            assert!(r.to_string().starts_with("Disallowed CORS "));
        }
        assert!(out.get(ACCESS_CONTROL_EXPOSE_HEADERS).is_none());
        assert!(lists_vary_origin(&out), "preflight without Vary: Origin");

        // Actual request.
        let mut out = upstream.clone();
        cors.apply(&req, &mut out);
        let acao = check_allow_origin(&out, origin, list, credentials);
        assert_eq!(
            acao.is_some(),
            origin.is_some_and(|o| cors.allows_origin(o.as_bytes()))
        );
        if acao.is_none() {
            assert!(out.get(ACCESS_CONTROL_EXPOSE_HEADERS).is_none());
        }
        if list {
            assert!(lists_vary_origin(&out), "answer without Vary: Origin");
        }
        let mut again = upstream.clone();
        cors.apply_origin(origin, &mut again);
        assert_eq!(again, out, "apply and apply_origin disagree");
    }

    // A policy from fuzzed origins: whatever it allows is a fixed point.
    if let Some(list) = config_origins
        && list != ["*"]
    {
        let Ok(fuzzed) = Cors::new(&CorsConfig {
            allow_origins: list,
            ..CorsConfig::default()
        }) else {
            return;
        };
        for o in req.get_all(ORIGIN) {
            if !fuzzed.allows_origin(o.as_bytes()) {
                continue;
            }
            let Ok(o) = o.to_str() else {
                panic!("an unreadable origin was allowed: {o:?}");
            };
            let own = Cors::new(&CorsConfig {
                allow_origins: vec![o.to_owned()],
                ..CorsConfig::default()
            });
            match own {
                Ok(own) => assert!(own.allows_origin(o.as_bytes()), "{o:?} not a fixed point"),
                Err(e) => panic!("an allowed origin {o:?} is refused as config: {e}"),
            }
        }
    }
});

/// Checks the `Access-Control-Allow-*` headers of an answer and returns
/// the one `Allow-Origin` value.
fn check_allow_origin<'a>(
    out: &'a HeaderMap,
    origin: Option<&HeaderValue>,
    list: bool,
    credentials: bool,
) -> Option<&'a HeaderValue> {
    let all: Vec<&HeaderValue> = out.get_all(ACCESS_CONTROL_ALLOW_ORIGIN).iter().collect();
    assert!(all.len() <= 1, "Allow-Origin set twice");
    let acao = all.first().copied();
    if let Some(v) = acao {
        let Some(o) = origin else {
            panic!("Allow-Origin {v:?} without a single request Origin");
        };
        if list {
            assert_eq!(v, o, "Allow-Origin is not the request's Origin");
            assert!(
                ORIGINS.iter().any(|c| c.as_bytes() == v.as_bytes()),
                "Allow-Origin {v:?} is not a configured origin"
            );
        } else {
            assert_eq!(v, "*");
        }
    }
    let acac = out.get_all(ACCESS_CONTROL_ALLOW_CREDENTIALS).iter().count();
    assert_eq!(acac, usize::from(acao.is_some() && credentials));
    acao
}

/// `Vary` names `Origin` (or `*`) on some line.
fn lists_vary_origin(out: &HeaderMap) -> bool {
    out.get_all(VARY).iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"origin") || t.trim_ascii() == b"*")
    })
}
