//! Forwarding to an upstream: the credential removed, hop-by-hop headers
//! dropped, identity headers added, bodies streamed, failures mapped to
//! 502 / 504.

use crate::config::{Route, Upstream};
use axum::body::Body;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use portcullis::auth::identity::CSRF_COOKIE;
use portcullis_core::credential::{CredentialNames, strip_cookie, strip_query_param};
use portcullis_core::trace::{TRACEPARENT, TRACESTATE, TraceContext};
use portcullis_core::{ErrorCode, Principal, Problem, Scheme};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Identity headers Portcullis sets; any a client sends are dropped.
pub const PRINCIPAL: HeaderName = HeaderName::from_static("x-portcullis-principal");
/// The principal's kind.
pub const KIND: HeaderName = HeaderName::from_static("x-portcullis-kind");
/// The principal's scopes.
pub const SCOPES: HeaderName = HeaderName::from_static("x-portcullis-scopes");
/// The credential's id.
pub const CREDENTIAL: HeaderName = HeaderName::from_static("x-portcullis-credential-id");
/// A trusted issuer's `iss`, for an external principal only.
pub const ISSUER: HeaderName = HeaderName::from_static("x-portcullis-issuer");
/// The request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Response bytes buffered per upstream connection.
pub const UPSTREAM_READ_BUF: usize = 64 * 1024;

/// The upstreams' connections, and each upstream's connection budget.
///
/// One pool per thread (`upstream::Pools`): an event loop reuses only the
/// upstream connections it opened, which live on its own runtime, so a
/// request never waits on another thread's pool or wakes another thread
/// to write to its connection.
#[derive(Clone)]
pub struct Proxy {
    pools: Arc<crate::upstream::Pools>,
    /// Each upstream origin's number in `pools` and its budget: requests
    /// in flight, at most `max_connections` (one HTTP/1.1 connection
    /// each). Built once; read without a lock.
    budgets: Arc<HashMap<String, (usize, Arc<Semaphore>), foldhash::fast::RandomState>>,
    queue_timeout: Duration,
}

impl Proxy {
    /// Connections with the given connect timeout, and `max_connections`
    /// to each of `origins` (requests beyond wait `queue_timeout`, then
    /// 503). Requests in flight hold a place in the budget, so no more
    /// than `max_connections` are busy at once; each thread keeps at most
    /// its share of them idle, trimmed when it next gives one back and by
    /// its sweeper every 15 s.
    pub fn new<'a>(
        connect_timeout: Duration,
        origins: impl IntoIterator<Item = &'a str>,
        max_connections: usize,
        queue_timeout: Duration,
        threads: usize,
    ) -> Proxy {
        let mut budgets = HashMap::default();
        let mut numbered = Vec::new();
        for o in origins {
            if !budgets.contains_key(o) {
                budgets.insert(
                    o.to_owned(),
                    (numbered.len(), Arc::new(Semaphore::new(max_connections))),
                );
                numbered.push(o);
            }
        }
        Proxy {
            pools: Arc::new(crate::upstream::Pools::new(
                numbered,
                connect_timeout,
                max_connections.div_ceil(threads.max(1)).max(1),
                max_connections,
            )),
            budgets: Arc::new(budgets),
            queue_timeout,
        }
    }

    /// Places of `origin`'s budget in use (for tests).
    #[cfg(test)]
    pub fn in_use(&self, origin: &str, max_connections: usize) -> usize {
        self.budgets
            .get(origin)
            .map_or(0, |(_, s)| max_connections - s.available_permits())
    }

    /// Sends the prepared request to `origin` within its budget; maps
    /// failures to problems. The budget's place is held until the
    /// response body ends, and the request body too: an upstream may
    /// answer before it has read the body, which then still occupies the
    /// connection.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        origin: &str,
        timeout: Duration,
    ) -> Result<Response<Body>, Problem> {
        let Some((number, sem)) = self.budgets.get(origin) else {
            // Every route's origin was numbered at start.
            tracing::error!(upstream = origin, "an upstream the proxy was not told of");
            return Err(
                Problem::new(ErrorCode::UpstreamUnavailable).log_reason("upstream_unavailable")
            );
        };
        let permit = match sem.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(self.queue_timeout, sem.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        crate::metrics::upstream_error(crate::metrics::UpstreamError::Busy);
                        tracing::warn!(upstream = origin, "upstream connection budget spent");
                        return Err(Problem::new(ErrorCode::UpstreamBusy)
                            .retry_after(1)
                            .log_reason("upstream_busy"));
                    }
                }
            }
        };
        let permit = if http_body::Body::is_end_stream(req.body()) {
            Permit::One(permit)
        } else {
            let shared = Arc::new(permit);
            let body = std::mem::take(req.body_mut());
            *req.body_mut() = Body::new(crate::body::Hold::new(body, shared.clone()));
            Permit::Shared(shared)
        };
        match tokio::time::timeout(timeout, self.pools.send(*number, req)).await {
            Err(_) => {
                crate::metrics::upstream_error(crate::metrics::UpstreamError::Timeout);
                Err(Problem::new(ErrorCode::UpstreamTimeout).log_reason("upstream_timeout"))
            }
            Ok(Err(e)) => {
                let connect = matches!(e, crate::upstream::SendError::Connect(_));
                crate::metrics::upstream_error(if connect {
                    crate::metrics::UpstreamError::Connect
                } else {
                    crate::metrics::UpstreamError::Request
                });
                tracing::warn!(error = %e, connect, "upstream request failed");
                Err(Problem::new(ErrorCode::UpstreamUnavailable).log_reason("upstream_unavailable"))
            }
            Ok(Ok(resp)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Body::new(crate::body::Hold::new(body, permit));
                Ok(Response::from_parts(parts, body))
            }
        }
    }
}

/// A place in an upstream's budget: the response body's alone, or shared
/// with the request body (released when both have ended). Held only to be
/// dropped.
#[expect(dead_code, reason = "a permit is held for its drop, never read")]
enum Permit {
    One(tokio::sync::OwnedSemaphorePermit),
    Shared(Arc<tokio::sync::OwnedSemaphorePermit>),
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any named in
/// `Connection`.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // The names `Connection` lists, then one pass over the request's own
    // names (a handful) against the fixed list, rather than a hashed
    // removal for each of the nine: most requests carry none of them,
    // and a Vec is made only when something is to go.
    let mut doomed = listed_in_connection(h);
    for name in h.keys() {
        if HOP_BY_HOP.contains(name) || matches!(name.as_str(), "keep-alive" | "proxy-connection") {
            doomed.push(name.clone());
        }
    }
    for n in doomed {
        h.remove(n);
    }
}

/// The names a `Connection` header lists (hop-by-hop for this hop).
fn listed_in_connection(h: &HeaderMap) -> Vec<HeaderName> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 with a standard name, and
/// the proxy credentials; `keep-alive` and `proxy-connection` beside them.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// Who sent a request and how: what the forwarding headers are built from.
pub struct Hop<'a> {
    /// The address Portcullis decided is the client's (the peer, or the
    /// one a trusted proxy named).
    pub client: IpAddr,
    /// The connection's peer.
    pub peer: IpAddr,
    /// Whether the peer is in `server.trusted_proxies`.
    pub trusted_peer: bool,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// This request's id.
    pub request_id: &'a HeaderValue,
    /// This hop's span: the upstream's parent (`traceparent`).
    pub trace: &'a TraceContext,
    /// Whether the client's `tracestate` travels with it (only beside the
    /// client's own, valid `traceparent`).
    pub keep_tracestate: bool,
}

/// Headers a client may use to make a server re-method or re-route a
/// request after Portcullis checked its method and path; removed unless
/// the route sets `forward_override_headers`.
pub const OVERRIDE_HEADERS: [&str; 6] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
];

/// How many headers `prepare` may add to a request (the five identity
/// headers, request id, traceparent, the four forwarding headers, Host).
const ADDED_UPSTREAM: usize = 12;

/// Rewrites a request for the upstream: credential out, identity in,
/// forwarding headers rebuilt, and the URI pointed at the route's upstream.
///
/// From a peer that is not a trusted proxy, every `X-Forwarded-*`,
/// `Forwarded` and `X-Real-IP` header is removed and Portcullis sets
/// `X-Forwarded-For` / `-Host` / `-Proto` and `X-Real-IP` alone; from a
/// trusted proxy its `X-Forwarded-For` chain is extended with the peer and
/// its `X-Forwarded-Host` / `-Proto` / `Forwarded` kept. Every
/// `X-Portcullis-*` header is the client's forgery and is removed, always.
pub fn prepare(
    req: &mut Request<Body>,
    route: &Route,
    names: &CredentialNames,
    principal: Option<&Principal>,
    hop: &Hop<'_>,
) -> Result<(), Problem> {
    let schemes = route.policy.schemes.schemes();
    // The authority the client addressed: `:authority` over HTTP/2 and the
    // absolute form, else `Host` (checked against trusted_hosts already).
    let authority = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| req.headers().get(header::HOST).cloned());
    let h = req.headers_mut();
    // Room for what is added below (identity, request id, trace context,
    // forwarding headers, Host) in one growth, not one rehash per
    // doubling of a map sized for the client's few headers. Past the
    // map's limit it grows as it goes, as without this.
    let _ = h.try_reserve(ADDED_UPSTREAM);
    strip_hop_by_hop(h);
    strip_client_headers(
        h,
        hop.trusted_peer,
        route.forward_override_headers,
        &names.header,
    );
    if schemes.contains(&Scheme::ApiKeyHeader) {
        h.remove(&names.header);
    }
    if schemes
        .iter()
        .any(|s| matches!(s, Scheme::Bearer | Scheme::Basic))
    {
        h.remove(header::AUTHORIZATION);
    }
    // Cookies only Portcullis reads never reach an upstream, whatever the
    // route: the admin console's session and the gateway's own session
    // and CSRF cookies (a browser sends them to every port of the host,
    // so an upstream on the same name would otherwise receive a console
    // session it could replay); and a route's cookie key.
    let own = [
        Some(portcullis::console::COOKIE),
        Some(CSRF_COOKIE),
        Some(names.session_cookie.as_str()),
        schemes
            .contains(&Scheme::ApiKeyCookie)
            .then_some(names.cookie.as_str()),
    ];
    // Most requests carry none of these: leave their cookies untouched
    // (no copy) unless some line names one.
    let names_own = h.get_all(header::COOKIE).iter().any(|v| {
        let v = v.as_bytes();
        own.iter()
            .flatten()
            .filter(|n| !n.is_empty())
            .any(|n| v.windows(n.len()).any(|w| w == n.as_bytes()))
    });
    if names_own {
        let lines: Vec<String> = h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        h.remove(header::COOKIE);
        for line in lines {
            let mut kept = Some(line);
            for name in own.iter().flatten() {
                kept = kept.and_then(|c| strip_cookie(&c, name));
            }
            if let Some(v) = kept.and_then(|c| HeaderValue::from_str(&c).ok()) {
                h.append(header::COOKIE, v);
            }
        }
    }
    if let Some(p) = principal {
        crate::identity_headers::insert(h, p);
    }
    h.insert(REQUEST_ID, hop.request_id.clone());
    // Lowercase hex and dashes: always a valid header value.
    if let Ok(v) = HeaderValue::from_bytes(&hop.trace.header()) {
        h.insert(TRACEPARENT, v);
    }
    if !hop.keep_tracestate {
        h.remove(TRACESTATE);
    }
    // The client's `100-continue` was answered by reading its body here;
    // the upstream gets the body at once, with nothing to wait for.
    h.remove(header::EXPECT);
    // A trusted proxy's chain is extended with the proxy itself (as
    // nginx's $proxy_add_x_forwarded_for does); anyone else's was removed
    // above, and the chain starts at the client.
    // An address always formats to a valid header value; formatted once,
    // on the stack.
    let client = address_value(hop.client);
    // Every line of a trusted chain: HAProxy adds its own as a new line.
    let prior: Vec<&str> = if hop.trusted_peer {
        h.get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let xff = if prior.is_empty() {
        client.clone()
    } else {
        HeaderValue::from_str(&format!("{}, {}", prior.join(", "), hop.peer)).ok()
    };
    h.remove(X_FORWARDED_FOR);
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    if let Some(v) = client {
        h.insert(X_REAL_IP, v);
    }
    if !(hop.trusted_peer && h.contains_key(X_FORWARDED_HOST))
        && let Some(a) = authority
    {
        h.insert(X_FORWARDED_HOST, a);
    }
    if !(hop.trusted_peer && h.contains_key(X_FORWARDED_PROTO)) {
        h.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if hop.tls { "https" } else { "http" }),
        );
    }

    // The query without a query-string key; borrowed when nothing is cut.
    let (path, query) = (req.uri().path(), req.uri().query());
    let stripped;
    let query = match query {
        Some(q) if schemes.contains(&Scheme::ApiKeyQuery) => {
            stripped = strip_query_param(q, &names.query);
            stripped.as_deref()
        }
        q => q,
    };
    let len = path.len() + query.map_or(0, |q| q.len() + 1);
    // Origin-form (`/path?query`): the connection is already the
    // upstream's, and `Host` names it. One buffer, exactly sized, handed
    // to `Uri` without a copy.
    let cannot =
        || Problem::new(ErrorCode::BadRequest).detail("the request target cannot be forwarded");
    if !path.starts_with('/') {
        return Err(cannot());
    }
    let base = base_path_of(route);
    let mut target = Vec::with_capacity(base.len() + len);
    target.extend_from_slice(base.as_bytes());
    push_target(&mut target, path, query);
    let uri = Uri::from_maybe_shared(bytes::Bytes::from(target)).map_err(|_| cannot())?;
    if let Upstream::Http { host, .. } = &route.upstream {
        req.headers_mut().insert(header::HOST, host.clone());
        // HTTP/2 clients arrive as HTTP/2; the upstream pool speaks HTTP/1.1.
        *req.version_mut() = http::Version::HTTP_11;
    }
    *req.uri_mut() = uri;
    Ok(())
}

/// The prefix a route adds to the request path ("" for the demo).
fn base_path_of(route: &Route) -> &str {
    match &route.upstream {
        Upstream::Http { base_path, .. } => base_path,
        Upstream::Demo => "",
    }
}

fn push_target(out: &mut Vec<u8>, path: &str, query: Option<&str>) {
    out.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
}

/// `addr` as a header value (cloned by reference count: it goes into
/// two headers).
fn address_value(addr: IpAddr) -> Option<HeaderValue> {
    let mut buf = [0u8; portcullis_core::net::ADDRESS_MAX];
    shared_value(portcullis_core::net::write_address(addr, &mut buf))
}

/// Room in a [`shared_value`].
pub const SHARED_MAX: usize = 64;

/// A short header value (at most [`SHARED_MAX`] bytes; `None` past that
/// or when not a valid value) that is shared by reference count from the
/// start. `Bytes::from_owner` takes one allocation, where
/// `HeaderValue::from_bytes` takes one for its copy and a second at the
/// first clone (`promote_to_shared`); the request id and the client's
/// address are each cloned into more than one header.
pub fn shared_value(v: &[u8]) -> Option<HeaderValue> {
    struct Short {
        buf: [u8; SHARED_MAX],
        len: usize,
    }
    impl AsRef<[u8]> for Short {
        fn as_ref(&self) -> &[u8] {
            self.buf.get(..self.len).unwrap_or_default()
        }
    }
    let mut s = Short {
        buf: [0; SHARED_MAX],
        len: v.len(),
    };
    s.buf.get_mut(..v.len())?.copy_from_slice(v);
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(s)).ok()
}

/// Removes what a client must not say to the upstream: every
/// `X-Portcullis-*` header; from an untrusted peer every forwarding header
/// (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`, `X-Client-IP`,
/// `True-Client-IP`, `CF-Connecting-IP`); and, unless the route opts in,
/// the re-method / re-route headers ([`OVERRIDE_HEADERS`]).
pub fn strip_client_headers(
    h: &mut HeaderMap,
    trusted_peer: bool,
    keep_overrides: bool,
    credential_header: &HeaderName,
) {
    // One pass over the names; a Vec only when something is to go.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in h.keys() {
        // CGI, WSGI, Rack and PHP read `_` as `-` (`X-Portcullis_Principal`
        // is `HTTP_X_PORTCULLIS_PRINCIPAL`): a name spelled with `_` is
        // judged as its dashed twin, and no proxy sends such a spelling of
        // these headers, so it goes whoever sent it. Only names with `_`
        // pay for the copy.
        let raw = name.as_str();
        let underscored = raw.contains('_');
        let dashed = if underscored {
            std::borrow::Cow::Owned(raw.replace('_', "-"))
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        let n = dashed.as_ref();
        let forwarding = n.starts_with("x-forwarded-")
            || matches!(
                n,
                "forwarded" | "x-real-ip" | "x-client-ip" | "true-client-ip" | "cf-connecting-ip"
            );
        let overriding = OVERRIDE_HEADERS.contains(&n);
        if n.starts_with("x-portcullis-")
            || (forwarding && (!trusted_peer || underscored))
            || (overriding && (!keep_overrides || underscored))
            || (underscored && n == credential_header.as_str())
        {
            doomed.push(name.clone());
        }
    }
    for n in doomed {
        h.remove(n);
    }
}

/// Removes from an upstream's answer every `Set-Cookie` naming a cookie
/// only Portcullis sets (the console's session, the gateway's session and
/// CSRF cookies): an upstream could otherwise overwrite an admin's console
/// session, or plant a session of its choosing (login CSRF).
pub fn strip_own_set_cookies(h: &mut HeaderMap, names: &CredentialNames) {
    let own = [
        portcullis::console::COOKIE,
        CSRF_COOKIE,
        names.session_cookie.as_str(),
    ];
    let named_own = |v: &HeaderValue| {
        let name = v
            .as_bytes()
            .split(|&b| b == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        own.iter().any(|n| n.as_bytes() == name)
    };
    if !h.get_all(header::SET_COOKIE).iter().any(named_own) {
        return;
    }
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !named_own(v))
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A shared value says what `from_bytes` says, up to its room, and
        /// its clones share the one buffer.
        #[test]
        fn shared_values_are_from_bytes_values(v in proptest::collection::vec(any::<u8>(), 0..80)) {
            let want = HeaderValue::from_bytes(&v).ok().filter(|_| v.len() <= SHARED_MAX);
            let got = shared_value(&v);
            prop_assert_eq!(&got, &want);
            if let Some(g) = got {
                let c = g.clone();
                prop_assert_eq!(c.as_bytes().as_ptr(), g.as_bytes().as_ptr());
            }
        }
    }

    /// The removal as first written: each name removed by its own lookup.
    fn reference(h: &mut HeaderMap) {
        for n in listed_in_connection(h) {
            h.remove(n);
        }
        for n in HOP_BY_HOP.iter().chain(&[
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
        ]) {
            h.remove(n);
        }
    }

    const NAMES: &[&str] = &[
        "connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "keep-alive",
        "proxy-connection",
        "host",
        "accept",
        "x-api-key",
        "x-custom",
        "cookie",
    ];

    proptest! {
        /// The one-pass removal leaves exactly what removing each
        /// hop-by-hop name (and each name `Connection` lists) leaves.
        #[test]
        fn one_pass_removes_what_each_lookup_did(
            present in proptest::collection::vec((0..NAMES.len(), "[a-z ]{0,6}"), 0..12),
            listed in proptest::collection::vec(0..NAMES.len(), 0..4),
            junk in "[a-z, ]{0,8}",
        ) {
            let mut h = HeaderMap::new();
            for (i, v) in &present {
                h.append(HeaderName::from_static(NAMES[*i]), HeaderValue::from_str(v).unwrap());
            }
            if !listed.is_empty() {
                let mut v: Vec<&str> = listed.iter().map(|i| NAMES[*i]).collect();
                v.push(&junk);
                h.append(header::CONNECTION, HeaderValue::from_str(&v.join(", ")).unwrap());
            }
            let mut want = h.clone();
            reference(&mut want);
            strip_hop_by_hop(&mut h);
            prop_assert_eq!(h, want);
        }
    }
}
