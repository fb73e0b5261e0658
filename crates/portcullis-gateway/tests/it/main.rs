//! Integration tests for the `portcullis` binary: real processes, real
//! sockets, real SQLite files. One test binary for the crate.

mod harness;

mod admin;
mod gateway;
mod logs;
mod nginx;
