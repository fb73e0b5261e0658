//! Policy strings and forwarding headers: `ratelimit::Policy::parse`,
//! `scope::Scopes::parse`, `route::PathPattern::parse` (with a route table
//! match), and `net::client_ip` under `X-Forwarded-For` and `Forwarded`.
//!
//! Input: lines. Every line is parsed as a rate-limit policy
//! (`100/minute; 1000/day`), a scope list, and a route pattern; all lines
//! together are the values of the forwarding header, read both as
//! `X-Forwarded-For` and as `Forwarded`, from a trusted and an untrusted
//! peer. (Scopes, policies and routes come from config, tokens and the
//! admin API; the forwarding headers from clients.)
//!
//! Invariants:
//! - a parsed policy has 1 to 8 limits, each at least 1 per period, no
//!   faster than one per nanosecond, with a period of whole seconds up to
//!   366 days and a burst of at least 1; counted in whole nanoseconds
//!   between requests it runs at most 1 % over what it says (a property
//!   test once found a rate the parser took at 1.0101×); it prints as a
//!   string that parses
//!   back to the same policy; GCRA (in nanoseconds) admits the first
//!   request from idle, never moves the counter backwards, never lets it
//!   run more than the window ahead of now, and a refused request waiting
//!   its `retry_after` is admitted;
//! - parsed scopes are sorted, unique, valid tokens, and print as a string
//!   that parses back to the same set, which covers itself;
//! - a parsed route pattern is a fixed point (`/x` parses to itself, a
//!   prefix `b` as `b/**` to itself) and a table holding it routes its own
//!   path (and that path upper-cased) to it;
//! - the client address is the peer, unless the peer is trusted; then it
//!   is the peer or an address written in the header values.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis_core::net::{self, Cidr, ForwardedHeader};
use portcullis_core::ratelimit::{self, Decision, Policy};
use portcullis_core::route::{PathPattern, RouteMatch, RouteTable};
use portcullis_core::scope::Scopes;
use portcullis_fuzz::{lines, text};
use std::net::IpAddr;
use std::sync::OnceLock;

fn trusted() -> &'static [Cidr] {
    static T: OnceLock<Vec<Cidr>> = OnceLock::new();
    T.get_or_init(|| {
        [
            "10.0.0.0/8",
            "127.0.0.1",
            "::1/128",
            "fd00::/8",
            "192.0.2.0/24",
        ]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let all: Vec<String> = lines(data).take(16).map(|l| text(l).into_owned()).collect();
    for line in &all {
        check_policy(line);
        check_scopes(line);
        check_pattern(line);
        // Trusted-proxy blocks come from config; only: no panic.
        if let Ok(c) = line.parse::<Cidr>() {
            let _ = c.contains(IpAddr::from([10, 1, 2, 3]));
        }
    }
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        assert_eq!(ForwardedHeader::parse(header.name()), Some(header));
        check_client_ip(header, &all);
    }
});

fn check_policy(s: &str) {
    let Ok(p) = Policy::parse(s) else { return };
    let limits = p.limits();
    assert!((1..=8).contains(&limits.len()), "{} limits", limits.len());
    for l in limits {
        assert!(l.count >= 1 && l.burst >= 1, "{l:?}");
        assert!(
            l.period_ms * 1_000_000 >= u64::from(l.count),
            "faster than 1/ns: {l:?}"
        );
        assert!(l.period_ms % 1000 == 0 && l.period_ms <= 366 * 86_400_000);
        let e = l.emission_ns();
        assert!(e >= 1 && e <= l.period_ms * 1_000_000);
        let counted = u128::from(l.period_ms * 1_000_000 / e);
        assert!(
            counted * 100 <= u128::from(l.count) * 101,
            "{l:?} counts {counted} a period, over 1 % more than written"
        );
        assert!(l.window_ns() >= e.min(ratelimit::MAX_SPAN_NS));
        assert!(l.window_ns() <= ratelimit::MAX_SPAN_NS);
        assert!(!l.header_value().is_empty());
        let period_ns = l.period_ms * 1_000_000;
        // GCRA: the first request from idle is admitted, whatever the time.
        for now in [
            0u64,
            1,
            1_700_000_000_000_000_000,
            4_102_444_800_000_000_000,
        ] {
            match ratelimit::decide(l, None, now, 1) {
                Decision::Admit { tat, reset_ns, .. } => {
                    assert!(tat > now && reset_ns == tat - now);
                    assert!(reset_ns <= l.window_ns());
                }
                d => panic!("first request refused: {l:?} {d:?}"),
            }
            // A counter in the past or future never panics and never moves
            // back.
            for tat in [
                now.saturating_sub(period_ns),
                now,
                now.saturating_add(period_ns),
            ] {
                for cost in [0, 1, l.burst, u32::MAX] {
                    match ratelimit::decide(l, Some(tat), now, cost) {
                        Decision::Admit { tat: new, .. } => assert!(new >= tat.max(now)),
                        Decision::Refuse { retry_after_ns, .. } => {
                            assert!(retry_after_ns > 0);
                            if cost <= l.burst && l.increment_ns(cost) <= l.window_ns() {
                                let later = now.saturating_add(retry_after_ns);
                                assert!(
                                    matches!(
                                        ratelimit::decide(l, Some(tat), later, cost),
                                        Decision::Admit { .. }
                                    ),
                                    "{l:?} cost {cost}: not admitted after retry_after"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    let printed = p.to_string();
    assert_eq!(
        Policy::parse(&printed).as_ref(),
        Ok(&p),
        "{s:?} printed as {printed:?} does not parse back"
    );
}

fn check_scopes(s: &str) {
    let Ok(sc) = Scopes::parse(s) else { return };
    let tokens: Vec<&str> = sc.iter().collect();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "not sorted: {tokens:?}"
    );
    for t in &tokens {
        assert!(!t.is_empty() && t.len() <= 128 && !t.contains([' ', ',', '"', '\\']));
        assert!(t.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(sc.contains(t));
    }
    assert!(sc.covers(&sc) && sc.missing(&sc).is_empty());
    let printed = sc.to_space_separated();
    assert_eq!(Scopes::parse(&printed).as_ref(), Ok(&sc));
    assert_eq!(
        Scopes::from_iter_checked(tokens.iter().copied()).as_ref(),
        Ok(&sc)
    );
}

fn check_pattern(s: &str) {
    let Ok(p) = PathPattern::parse(s) else { return };
    let (again, path) = match &p {
        PathPattern::Exact(x) => (PathPattern::parse(x), x.clone()),
        PathPattern::Prefix(b) => (PathPattern::parse(&format!("{b}/**")), format!("{b}/x")),
    };
    // A stored pattern parses to itself (`/%2A` once broke this).
    assert_eq!(again.as_ref(), Ok(&p), "{s:?} is not a fixed point");
    let mut table = RouteTable::new();
    table.add(p.clone(), Some(vec![Method::GET]), 1u8);
    for path in [path.clone(), path.to_ascii_uppercase()] {
        assert_eq!(
            table.find(&Method::GET, &path),
            RouteMatch::Found(&1),
            "{p:?} does not route {path:?}"
        );
        assert_eq!(
            table.find(&Method::POST, &path),
            RouteMatch::MethodNotAllowed(vec![Method::GET])
        );
    }
}

fn check_client_ip(header: ForwardedHeader, values: &[String]) {
    let trusted = trusted();
    let peers: [IpAddr; 3] = [
        IpAddr::from([10, 0, 0, 1]),
        IpAddr::from([203, 0, 113, 9]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ];
    let written = addresses_in(values);
    for peer in peers {
        let ip = net::client_ip(peer, trusted, header, values.iter().map(String::as_str));
        if !net::is_trusted(trusted, peer) {
            assert_eq!(ip, peer, "an untrusted peer's header was believed");
            continue;
        }
        assert!(
            ip == peer || written.contains(&ip),
            "{ip} is neither the peer nor in the header {values:?}"
        );
        // counted_address never panics, and keeps IPv4 as it is.
        let counted = net::counted_address(ip);
        if ip.is_ipv4() {
            assert_eq!(counted, ip);
        }
    }
}

/// Every address written anywhere in the values, read independently of
/// `net`: split on every delimiter either header uses, and also read
/// `a.b.c.d:port` as its address.
fn addresses_in(values: &[String]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for v in values {
        for token in v.split([',', ';', '=', '"', '[', ']', ' ', '\t']) {
            let token = token.trim();
            if let Ok(ip) = token.parse::<IpAddr>() {
                out.push(ip);
            } else if let Some((a, _)) = token.split_once(':')
                && let Ok(ip) = a.trim().parse::<IpAddr>()
            {
                out.push(ip);
            }
        }
    }
    out
}
