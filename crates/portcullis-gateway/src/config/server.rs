//! `[server]`: the listeners, whose forwarding headers are believed, and
//! the sizes, deadlines and HTTP/2 limits each connection is held to.

use super::value::{addr, dur, positive};
use super::{ConfigError, cerr};
use portcullis_core::net::Cidr;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    forwarded_header: Option<String>,
    header_read_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    shutdown_grace: Option<String>,
    trusted_hosts: Option<Vec<String>>,
    body_read_timeout: Option<String>,
    first_request_timeout: Option<String>,
    idle_timeout: Option<String>,
    send_timeout: Option<String>,
    h2c: Option<bool>,
    h2_max_streams: Option<u32>,
    h2_control_frames_per_second: Option<u32>,
    threads: Option<usize>,
}

/// The deadlines and HTTP/2 limits every connection is held to (see
/// `serve.rs` and docs/security.md, "Hostile clients").
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// From accept to the first complete request head: TLS handshake,
    /// protocol detection and the HTTP/2 preface included.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight is closed after this
    /// (HTTP/1.1 keep-alive and HTTP/2 alike, PINGs or not).
    pub idle_timeout: Duration,
    /// A response the client does not read for this long closes the
    /// connection.
    pub send_timeout: Duration,
    /// Serve HTTP/2 with prior knowledge on plain listeners.
    pub h2c: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_streams: u32,
    /// Control frames (PING, SETTINGS, RST_STREAM, PRIORITY, empty
    /// frames) per second per connection before GOAWAY (0 = no limit).
    pub h2_control_frames_per_second: u32,
}

/// The listeners and what a request may be: the first keys of `[server]`
/// read, before the other sections.
pub(super) struct Listeners {
    pub(super) listen: SocketAddr,
    pub(super) admin_listen: SocketAddr,
    pub(super) trusted_proxies: Vec<Cidr>,
    pub(super) forwarded_header: portcullis_core::net::ForwardedHeader,
    pub(super) max_header_bytes: usize,
    pub(super) max_body_bytes: usize,
    pub(super) max_connections: usize,
}

pub(super) fn listeners(s: &RawServer) -> Result<Listeners, ConfigError> {
    let listen = addr("server.listen", &s.listen, "127.0.0.1:8080")?;
    let admin_listen = addr("server.admin_listen", &s.admin_listen, "127.0.0.1:8081")?;
    if listen == admin_listen {
        return Err(cerr(
            "server.admin_listen",
            "must differ from server.listen: the admin API never shares the public listener",
        ));
    }
    let trusted_proxies = s
        .trusted_proxies
        .clone()
        .unwrap_or_else(|| vec!["127.0.0.1/32".into(), "::1/128".into()])
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.parse::<Cidr>()
                .map_err(|e| cerr(format!("server.trusted_proxies[{i}]"), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let forwarded_header = match s.forwarded_header.as_deref() {
        None => portcullis_core::net::ForwardedHeader::default(),
        Some(h) => portcullis_core::net::ForwardedHeader::parse(h).ok_or_else(|| {
            cerr(
                "server.forwarded_header",
                "use \"x-forwarded-for\" or \"forwarded\" (the one your proxy sets)",
            )
        })?,
    };
    let max_header_bytes = s.max_header_bytes.unwrap_or(16 * 1024);
    if !(8192..=1024 * 1024).contains(&max_header_bytes) {
        return Err(cerr(
            "server.max_header_bytes",
            "must be between 8192 and 1048576",
        ));
    }
    let max_body_bytes = s.max_body_bytes.unwrap_or(64 * 1024);
    let max_connections = s.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        return Err(cerr("server.max_connections", "must be at least 1"));
    }
    Ok(Listeners {
        listen,
        admin_listen,
        trusted_proxies,
        forwarded_header,
        max_header_bytes,
        max_body_bytes,
        max_connections,
    })
}

/// Each connection's deadlines and limits, and the hosts it may address.
pub(super) struct Connections {
    pub(super) header_read_timeout: Duration,
    pub(super) max_connections_per_ip: usize,
    pub(super) trusted_hosts: portcullis_core::host::TrustedHosts,
    pub(super) body_read_timeout: Duration,
    pub(super) conn: ConnLimits,
    pub(super) threads: usize,
}

/// Most event loops the public listener may be given: past the cores a
/// machine has, more loops only add scheduling.
const MAX_THREADS: usize = 256;

/// `server.threads`: event loops serving the public listener, one per core
/// by default (what the OS says this process may use, cgroup quotas
/// included).
fn threads(s: &RawServer) -> Result<usize, ConfigError> {
    match s.threads {
        Some(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        Some(_) => Err(cerr(
            "server.threads",
            format!("must be between 1 and {MAX_THREADS} (leave it out for one per core)"),
        )),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

pub(super) fn connections(s: &RawServer) -> Result<Connections, ConfigError> {
    Ok(Connections {
        threads: threads(s)?,
        header_read_timeout: dur(
            "server.header_read_timeout",
            &s.header_read_timeout,
            Duration::from_secs(10),
        )?,
        max_connections_per_ip: s.max_connections_per_ip.unwrap_or(256),
        trusted_hosts: portcullis_core::host::TrustedHosts::parse(
            s.trusted_hosts.as_deref().unwrap_or_default(),
        )
        .map_err(|e| cerr("server", e.to_string()))?,
        body_read_timeout: positive(
            dur(
                "server.body_read_timeout",
                &s.body_read_timeout,
                Duration::from_secs(30),
            )?,
            "server.body_read_timeout",
        )?,
        conn: ConnLimits {
            first_request_timeout: positive(
                dur(
                    "server.first_request_timeout",
                    &s.first_request_timeout,
                    Duration::from_secs(10),
                )?,
                "server.first_request_timeout",
            )?,
            idle_timeout: positive(
                dur(
                    "server.idle_timeout",
                    &s.idle_timeout,
                    Duration::from_secs(60),
                )?,
                "server.idle_timeout",
            )?,
            send_timeout: positive(
                dur(
                    "server.send_timeout",
                    &s.send_timeout,
                    Duration::from_secs(30),
                )?,
                "server.send_timeout",
            )?,
            h2c: s.h2c.unwrap_or(false),
            h2_max_streams: match s.h2_max_streams {
                Some(0) => return Err(cerr("server.h2_max_streams", "must be at least 1")),
                Some(n) => n,
                None => 100,
            },
            h2_control_frames_per_second: s.h2_control_frames_per_second.unwrap_or(100),
        },
    })
}

pub(super) fn shutdown_grace(s: &RawServer) -> Result<Duration, ConfigError> {
    dur(
        "server.shutdown_grace",
        &s.shutdown_grace,
        Duration::from_secs(30),
    )
}
