//! Integration tests for the `portcullis` binary: real processes, real
//! sockets, real SQLite files — or, with `GATEWAY_TEST_STORE=postgres`, a
//! real Postgres database per test (harness.rs). One test binary for the
//! crate.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

mod abuse;
mod admin;
mod analytics;
mod boundary;
mod browser;
mod caddy;
mod console;
mod cors;
mod docs;
mod fault_proxy;
mod gateway;
mod hostile;
mod hostile_clients;
mod logs;
mod metrics;
mod nginx;
mod oauth;
mod oidc;
mod openapi;
mod optional;
mod ratelimit;
mod redis;
// The private Postgres cluster, the library's helper.
#[path = "../../../portcullis/tests/it/pg_server.rs"]
mod pg_server;
// Free ports below the ephemeral range, the library's helper.
#[path = "../../../portcullis/tests/it/ports.rs"]
mod ports;
mod proxies;
// One helper for both crates' tests: the library's.
#[path = "../../../portcullis/tests/it/redis_server.rs"]
mod redis_server;
mod scale;
mod secrets;
mod sessions;
mod store_copy;
mod tls;
mod traefik;
mod webdriver;
