//! Cheap refusals under attack, over real sockets: a flood of unknown keys
//! from one loopback address (127.0.0.2) gets it blocked — 429,
//! `Retry-After`, problem+json — with no key lookup while blocked, while
//! another address (127.0.0.3) with a valid key is served; the block ends
//! on time; the decision endpoint counts the address a trusted proxy
//! names in `X-Forwarded-For`, not the proxy's own. (Linux routes all of
//! 127/8 to the loopback.)

use crate::harness::*;
use reqwest::blocking::{Client, Response};
use std::net::IpAddr;
use std::time::Duration;

/// These tests read the 429 a blocked address gets on every request, so
/// its connections are not closed (see the test of `close_connections`).
const CFG: &str = r#"
[abuse]
threshold = 5
block = "2s"
close_connections = false

[[routes]]
path = "/data"
methods = ["GET"]
upstream = "demo"
auth = ["api_key_header"]
"#;

/// A blocking client whose connections leave from `local`.
fn client_from(local: &str) -> Client {
    crypto_provider();
    reqwest::blocking::Client::builder()
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A well-formed key no store knows: checking it costs a lookup.
fn unknown_key(seed: u8) -> String {
    portcullis_core::ApiKey::generate("live", &[seed; 32])
        .unwrap()
        .expose()
        .to_owned()
}

/// The value of the unlabelled sample `name` in a Prometheus scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn scrape(env: &Env, admin: &str) -> String {
    let r = client()
        .get(env.admin_url("/metrics"))
        .bearer_auth(admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().unwrap()
}

/// Asserts `r` is the blocked address's 429 and returns its Retry-After.
fn assert_blocked(r: Response) -> u64 {
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let b: serde_json::Value = r.json().unwrap();
    assert_eq!(b["code"], "too_many_attempts", "{b}");
    assert!(
        b["detail"].as_str().unwrap().contains("this address"),
        "{b}"
    );
    retry
}

/// Starts the gateway on `env`: its admin key, a valid key, the server.
fn start(env: &Env) -> (String, String, Server) {
    let admin = env.init();
    let valid = env.create_key(&["--name", "valid"]);
    (admin, valid, env.serve())
}

/// `url` asked with the `i`th made-up key.
fn send_unknown(c: &Client, url: &str, i: u8) -> reqwest::blocking::Response {
    c.get(url)
        .header("X-API-Key", unknown_key(i))
        .send()
        .unwrap()
}

/// Five unknown keys from `c`, each refused 401: the threshold of `CFG`.
fn five_unknown_keys(c: &Client, url: &str) {
    for i in 0..5 {
        assert_eq!(send_unknown(c, url, i).status(), 401);
    }
}

#[test]
fn a_flood_from_one_address_is_refused_before_any_lookup_and_others_are_served() {
    let env = Env::new(CFG);
    let (admin, valid, _s) = start(&env);
    let flood = client_from("127.0.0.2");
    let other = client_from("127.0.0.3");
    let url = env.url("/data");

    five_unknown_keys(&flood, &url);
    // Another address with a valid key (looked up once, then cached).
    let r = other.get(&url).header("X-API-Key", &valid).send().unwrap();
    assert_eq!(r.status(), 200);
    let before = scrape(&env, &admin);
    let lookups = sample(&before, "portcullis_store_key_lookups_total");
    assert!(lookups >= 5.0, "{before}");
    for i in 5..40 {
        assert_blocked(send_unknown(&flood, &url, i));
    }
    // Even a valid key from the blocked address waits out the block.
    assert_blocked(flood.get(&url).header("X-API-Key", &valid).send().unwrap());
    // Another address is served all along.
    let r = other.get(&url).header("X-API-Key", &valid).send().unwrap();
    assert_eq!(r.status(), 200);
    let after = scrape(&env, &admin);
    // No lookup for the blocked address's 35 unknown keys (the valid
    // key, cached, needs none either).
    assert_eq!(
        sample(&after, "portcullis_store_key_lookups_total"),
        lookups,
        "{after}"
    );
    assert_eq!(sample(&after, "portcullis_abuse_blocks_total"), 1.0);
    assert!(
        after.contains("portcullis_abuse_refused_total{reason=\"blocked\"} 36"),
        "{after}"
    );
    assert!(
        after.contains("outcome=\"locked_out\""),
        "refusals are counted as locked_out decisions: {after}"
    );

    // After the block, the address is admitted again.
    std::thread::sleep(Duration::from_millis(2100));
    let r = flood.get(&url).header("X-API-Key", &valid).send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_blocked_address_that_ignores_its_429s_has_its_connections_held_at_accept() {
    let env = Env::new(
        &CFG.replace("close_connections = false", "")
            .replace("block = \"2s\"", "block = \"10s\""),
    );
    let (admin, valid, _s) = start(&env);
    let flood = client_from("127.0.0.2");
    let other = client_from("127.0.0.3");
    let url = env.url("/data");
    five_unknown_keys(&flood, &url);
    let blocked_at = std::time::Instant::now();
    // Its 429s, each ending its connection (the next is a new one):
    // `threshold` (5) of them while blocked, then it ignores Retry-After.
    for i in 5..10 {
        let r = send_unknown(&flood, &url, i);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["connection"], "close");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=10).contains(&retry), "Retry-After: {retry}");
    }
    // From now on each new connection is taken and held unread until the
    // block ends (here the client gives up first), valid key or not;
    // another address is served all along.
    let impatient = reqwest::blocking::Client::builder()
        .local_address("127.0.0.2".parse::<IpAddr>().unwrap())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for key in [unknown_key(10), valid.clone()] {
        assert!(
            blocked_at.elapsed() < Duration::from_secs(8),
            "too slow a machine for a 10 s block"
        );
        match impatient.get(&url).header("X-API-Key", key).send() {
            Err(e) => assert!(e.is_timeout(), "{e}"),
            Ok(r) => panic!("a held connection was answered: {}", r.status()),
        }
        let r = other.get(&url).header("X-API-Key", &valid).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = scrape(&env, &admin);
    let held = m
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_abuse_refused_total{reason=\"connection\"} "))
        .unwrap_or_else(|| panic!("no refused connections counted: {m}"));
    assert_eq!(held.trim().parse::<f64>().unwrap(), 2.0, "{m}");
    // Nothing read from them: the unknown key was never counted.
    assert_eq!(sample(&m, "portcullis_abuse_failures_total"), 5.0, "{m}");

    // After the block, the address is served again.
    let deadline = blocked_at + Duration::from_secs(20);
    loop {
        match flood.get(&url).header("X-API-Key", &valid).send() {
            Ok(r) if r.status() == 200 => break,
            _ if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250))
            }
            r => panic!("still refused after the block: {:?}", r.map(|r| r.status())),
        }
    }
}

/// A blocked address that sends a request now and then (people behind a
/// NAT one client got blocked) gets its 429s, and public routes stay open
/// to it.
#[test]
fn a_blocked_address_that_waits_is_answered_and_public_routes_stay_open() {
    let env = Env::new(&format!(
        "{}\n[[routes]]\npath = \"/public\"\nmethods = [\"GET\"]\nupstream = \"demo\"\nauth = []\n",
        CFG.replace("close_connections = false", "")
            .replace("block = \"2s\"", "block = \"10s\""),
    ));
    let _admin = env.init();
    let _s = env.serve();
    let flood = client_from("127.0.0.2");
    let url = env.url("/data");
    five_unknown_keys(&flood, &url);
    for i in 5..8 {
        let r = send_unknown(&flood, &url, i);
        assert_eq!(r.status(), 429);
        let r = flood.get(env.url("/public")).send().unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[test]
fn the_decision_endpoint_counts_the_address_the_trusted_proxy_names() {
    let env = Env::with_server("trusted_proxies = [\"127.0.0.9/32\"]", CFG);
    let (_, valid, _s) = start(&env);
    let proxy = client_from("127.0.0.9");
    let verify = |client_ip: &str, key: &str| {
        proxy
            .get(env.url("/auth/verify"))
            .header("X-Original-URI", "/data")
            .header("X-Original-Method", "GET")
            .header("X-Forwarded-For", client_ip)
            .header("X-API-Key", key)
            .send()
            .unwrap()
    };
    for i in 0..5 {
        assert_eq!(verify("203.0.113.7", &unknown_key(i)).status(), 401);
    }
    assert_blocked(verify("203.0.113.7", &unknown_key(9)));
    assert_blocked(verify("203.0.113.7", &valid));
    // The proxy's other clients, and the proxy itself, are unaffected.
    assert_eq!(verify("203.0.113.8", &valid).status(), 200);
    let r = proxy
        .get(env.url("/auth/verify"))
        .header("X-Original-URI", "/data")
        .header("X-API-Key", &valid)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // A client's own X-Forwarded-For names nobody: from an untrusted
    // peer the decision endpoint is not answered at all, and the proxy
    // path counts the peer's address.
    let r = client_from("127.0.0.4")
        .get(env.url("/data"))
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-API-Key", &valid)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn turned_off_no_address_is_blocked() {
    let env = Env::new(&CFG.replace("threshold = 5", "threshold = 5\nenabled = false"));
    env.init();
    let _s = env.serve();
    let c = client_from("127.0.0.5");
    for i in 0..10 {
        let r = send_unknown(&c, &env.url("/data"), i);
        assert_eq!(r.status(), 401);
    }
}

#[test]
fn wrong_client_secrets_at_the_token_endpoint_block_the_address_before_hashing() {
    let env = Env::new(CFG);
    env.init();
    let (id, secret) = env.add_client("svc", "data:read", "client_credentials");
    let _s = env.serve();
    let token = |from: &str, secret: &str| {
        client_from(from)
            .post(env.url("/oauth/token"))
            .basic_auth(&id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(
            token("127.0.0.6", "wrong-secret-wrong-secret").status(),
            401
        );
    }
    assert_blocked(token("127.0.0.6", "wrong-secret-wrong-secret"));
    assert_blocked(token("127.0.0.6", &secret));
    assert_eq!(token("127.0.0.7", &secret).status(), 200);
}

#[test]
fn a_trusted_proxy_is_never_blocked_for_its_clients() {
    let env = Env::with_server("trusted_proxies = [\"127.0.0.9/32\"]", CFG);
    let (_, valid, _s) = start(&env);
    let proxy = client_from("127.0.0.9");
    let data = |forwarded: &str, key: &str| {
        proxy
            .get(env.url("/data"))
            .header("X-Forwarded-For", forwarded)
            .header("X-API-Key", key)
            .send()
            .unwrap()
    };
    // Entries with a port (Azure Application Gateway) name the client.
    for i in 0..6 {
        let r = data("198.51.100.7:4711", &unknown_key(i));
        assert!(matches!(r.status().as_u16(), 401 | 429));
    }
    assert_blocked(data("198.51.100.7:4711", &valid));
    assert_eq!(data("198.51.100.8:4711", &valid).status(), 200);
    // An entry that does not parse leaves the proxy's own address: it
    // is never counted, so never blocked for all its clients.
    for i in 0..6 {
        assert_eq!(data("not-an-address", &unknown_key(20 + i)).status(), 401);
    }
    assert_eq!(data("not-an-address", &valid).status(), 200);
}

#[test]
fn a_web_page_cannot_get_its_visitors_blocked_through_the_token_endpoint() {
    let env = Env::new(CFG);
    let (_, valid, _s) = start(&env);
    let refresh = |from: &str, cross_site: bool| {
        let mut r = client_from(from)
            .post(env.url("/oauth/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")]);
        if cross_site {
            r = r
                .header("Origin", "https://evil.example")
                .header("Sec-Fetch-Site", "cross-site");
        }
        r.send().unwrap()
    };
    let data = |from: &str| {
        client_from(from)
            .get(env.url("/data"))
            .header("X-API-Key", &valid)
            .send()
            .unwrap()
    };
    // A page's no-cors POSTs, sent by its visitor's browser: not counted.
    for _ in 0..6 {
        let s = refresh("127.0.0.2", true).status().as_u16();
        assert!(matches!(s, 400 | 401), "{s}");
    }
    assert_eq!(data("127.0.0.2").status(), 200);
    // The same failures from a client that is no browser: counted.
    for _ in 0..5 {
        let s = refresh("127.0.0.3", false).status().as_u16();
        assert!(matches!(s, 400 | 401), "{s}");
    }
    assert_blocked(data("127.0.0.3"));
}

#[test]
fn a_blocked_address_is_refused_at_every_endpoint_that_checks_a_credential() {
    let env = Env::new(CFG);
    env.init();
    let _s = env.serve();
    let c = client_from("127.0.0.2");
    for i in 0..5 {
        let r = send_unknown(&c, &env.url("/data"), i);
        assert_eq!(r.status(), 401);
    }
    let form = [("token", "pca_nothing")];
    for path in ["/oauth/introspect", "/oauth/revoke"] {
        let r = c
            .post(env.url(path))
            .basic_auth("no-such-client", Some("no-such-secret"))
            .form(&form)
            .send()
            .unwrap();
        assert_blocked(r);
    }
    let r = c
        .get(env.url("/auth/csrf"))
        .header("Cookie", "__Host-portcullis_session=pcs_unknown")
        .send()
        .unwrap();
    assert_blocked(r);
    // Another address still gets its answer (an unknown client: 401).
    let r = client_from("127.0.0.3")
        .post(env.url("/oauth/introspect"))
        .basic_auth("no-such-client", Some("no-such-secret"))
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn unknown_clients_at_introspection_count_toward_the_block() {
    let env = Env::new(CFG);
    env.init();
    let _s = env.serve();
    let introspect = || {
        client_from("127.0.0.4")
            .post(env.url("/oauth/introspect"))
            .basic_auth("no-such-client", Some("no-such-secret"))
            .form(&[("token", "pca_nothing")])
            .send()
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(introspect().status(), 401);
    }
    assert_blocked(introspect());
}
