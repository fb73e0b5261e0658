//! `portcullis`: the gateway, its decision endpoint, its admin API, and the
//! CLI that manages keys.

mod access_log;
#[cfg(feature = "alloc-count")]
mod alloc_count;
mod body;
mod cli;
mod config;
mod conn_watch;
mod demo;
mod engine;
mod gateway;
mod hold;
mod identity_headers;
mod logwriter;
mod metrics;
mod proxy;
mod serve;
mod tls;
mod trace_ids;
mod upstream;
mod wiring;

use std::process::ExitCode;

fn main() -> ExitCode {
    // The CLI and the background work (store polling, log writing,
    // analytics, metrics upkeep, the admin listener): the public listener
    // has its own event loops, one per core (engine.rs), so one worker
    // here is enough and takes no core from them.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cli::run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<config::ConfigError>().is_some()
                || e.downcast_ref::<cli::UsageError>().is_some()
            {
                2
            } else {
                1
            };
            eprintln!("portcullis: error: {e:#}");
            ExitCode::from(code)
        }
    }
}
