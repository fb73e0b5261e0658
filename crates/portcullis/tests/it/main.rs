//! Library integration tests: real SQLite files in temporary directories,
//! a manual clock for time, and several store handles on one file where a
//! test plays more than one process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod abuse;
mod analytics;
mod common;
mod copy;
mod failures;
mod fastapi;
mod guard;
mod jwks_fetch;
mod last_admin;
mod lifecycle;
mod lookups;
mod no_store;
mod pg_server;
mod pipeline;
mod ports;
mod postgres;
mod redis_limit;
mod redis_server;
mod rotation;
mod store_contract;
mod sync;
mod tokens;
mod uses;
