//! The admin console: server-rendered HTML at `/console/` on the admin
//! listener, for people with an admin key.
//!
//! - `session`: the signed, stateless session cookie and its CSRF token;
//! - `chart`: the usage charts, drawn here as SVG;
//! - `pages`: the layout and each page's markup (maud escapes every
//!   value: key names and owners are chosen by whoever holds a key);
//! - `handlers`: what each route reads, checks and answers.
//!
//! This module holds the router, the gate every request passes (host,
//! session, CSRF), and the headers every answer carries. The console
//! changes nothing itself: keys through [`crate::auth::keys::KeyService`],
//! users and clients through [`crate::auth::identity::Identity`], the
//! same services (and so the same rules and audit events) as the admin
//! API and the CLI.

mod chart;
mod handlers;
mod pages;
mod session;

pub use session::COOKIE;

use crate::admin::AdminState;
use crate::clock::{SharedClock, SystemClock};
use crate::store::{ADMIN_SCOPE, KeyRecord, StoreError};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use http::header::{
    CACHE_CONTROL, CONTENT_TYPE, LOCATION, REFERRER_POLICY, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use portcullis_core::authority::{Authority, HostKind, Syntax, parse_authority};
use portcullis_core::csrf::CsrfError;
use portcullis_core::key::{KeyGrant, KeyState};
use portcullis_core::{Scopes, csrf};
use session::{Ended, Session, Sessions};
use std::sync::Arc;
use std::time::Duration;

/// Where the console is mounted.
pub const PREFIX: &str = "/console";

/// The Content-Security-Policy of every console answer: only this
/// origin's script and stylesheet, no inline script or style, no frames,
/// forms only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How the console behaves.
#[derive(Clone)]
pub struct ConsoleOptions {
    /// A session ends this long after sign-in, whatever happens.
    pub session_ttl: Duration,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
    /// Host names the console answers to besides IP literals and
    /// `localhost` (a name a TLS proxy in front of the admin listener
    /// uses). Any other `Host` is refused, so a DNS-rebinding page cannot
    /// reach the console under its own name.
    pub hosts: Vec<String>,
    /// The clock.
    pub clock: SharedClock,
    /// The per-key analytics aggregator, for the health page (the charts
    /// read the store).
    pub analytics: Option<Arc<crate::analytics::Analytics>>,
}

impl std::fmt::Debug for ConsoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleOptions")
            .field("session_ttl", &self.session_ttl)
            .field("idle_timeout", &self.idle_timeout)
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            session_ttl: Duration::from_secs(8 * 3600),
            idle_timeout: Duration::from_secs(30 * 60),
            hosts: Vec::new(),
            clock: Arc::new(SystemClock),
            analytics: None,
        }
    }
}

/// What the console's handlers share.
#[derive(Clone)]
pub(crate) struct Console(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) admin: AdminState,
    pub(crate) sessions: Sessions,
    pub(crate) opts: ConsoleOptions,
}

impl std::ops::Deref for Console {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The console's router, to merge into the admin listener's. Reads (or,
/// on first start, creates) the session signing key in the store, so
/// every gateway sharing the store accepts each other's sessions.
pub async fn router(admin: AdminState, opts: ConsoleOptions) -> Result<Router, StoreError> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh)
        .map_err(|_| StoreError::Unsupported("no randomness for the console's session key"))?;
    let key = admin
        .keys
        .store()
        .secret("console_session_hmac", &fresh, opts.clock.now())
        .await?;
    let st = Console(Arc::new(Inner {
        sessions: Sessions::new(key, &opts),
        admin,
        opts,
    }));
    use handlers as h;
    Ok(Router::new()
        .route(PREFIX, get(h::to_console))
        .route("/console/", get(h::keys_list))
        .route("/console/sign-in", get(h::sign_in_form).post(h::sign_in))
        .route("/console/sign-out", post(h::sign_out))
        .route("/console/keys", get(h::keys_list).post(h::create_key))
        .route("/console/keys/new", get(h::new_key_form))
        .route("/console/keys/{id}", get(h::key_page))
        .route("/console/keys/{id}/{action}", post(h::key_action))
        .route("/console/users", get(h::users))
        .route("/console/users/{name}/{action}", post(h::user_action))
        .route("/console/clients", get(h::clients))
        .route("/console/clients/{id}/revoke", post(h::revoke_client))
        .route("/console/audit", get(h::audit))
        .route("/console/health", get(h::health))
        .route("/console/assets/{name}", get(h::asset))
        .route("/console/{*rest}", get(h::not_found).post(h::not_found))
        .layer(middleware::from_fn_with_state(st.clone(), gate))
        .with_state(st))
}

/// Every console request: the host check first, then the headers of
/// every answer.
async fn gate(State(st): State<Console>, req: Request, next: Next) -> Response {
    let mut resp = if local_host_allowed(req.headers(), &st.opts.hosts) {
        next.run(req).await
    } else {
        tracing::info!(target: "portcullis::console", reason = "console_host_refused", "console request refused");
        pages::refusal(
            StatusCode::FORBIDDEN,
            "Host not allowed",
            "The console answers only when reached by an IP address, localhost, or a name listed in [console] hosts.",
        )
    };
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The `Host` a request names, read by the one strict reading the host
/// rule uses (`portcullis_core::authority`): anything else is no host.
fn host(headers: &HeaderMap) -> Option<Authority<'_>> {
    let h = headers.get(http::header::HOST)?.to_str().ok()?;
    parse_authority(h, Syntax::HostHeader).ok()
}

/// Whether the request names a loopback host (`localhost`, 127.0.0.0/8,
/// `::1`): where browsers treat plain HTTP as a secure context.
pub(crate) fn loopback_host(headers: &HeaderMap) -> bool {
    host(headers).is_some_and(|a| match a.kind {
        HostKind::Ipv4(ip) => ip.is_loopback(),
        HostKind::Ipv6(ip) => ip.is_loopback(),
        HostKind::Name => a.host.eq_ignore_ascii_case("localhost"),
    })
}

/// Whether a request to a listener meant for people on this machine (the
/// console, an unguarded metrics listener) names a host it may: an IP
/// literal, `localhost`, or one of `extra`. A page on a rebound DNS name
/// (`attacker.example` → 127.0.0.1) names its own host, and is refused.
pub fn local_host_allowed(headers: &HeaderMap, extra: &[String]) -> bool {
    host(headers).is_some_and(|a| match a.kind {
        HostKind::Ipv4(_) | HostKind::Ipv6(_) => true,
        HostKind::Name => {
            a.host.eq_ignore_ascii_case("localhost")
                || extra.iter().any(|e| e.eq_ignore_ascii_case(a.host))
        }
    })
}

/// A signed-in request: the session, the admin key behind it, and the
/// CSRF token its forms carry.
pub(crate) struct Ctx {
    pub(crate) session: Session,
    pub(crate) admin_key: KeyRecord,
    pub(crate) csrf: String,
    /// The renewed cookie (its idle time restarted).
    set_cookie: String,
}

impl Ctx {
    /// `resp` with the renewed session cookie.
    pub(crate) fn answer(&self, mut resp: Response) -> Response {
        if let Ok(v) = HeaderValue::from_str(&self.set_cookie) {
            resp.headers_mut().append(SET_COOKIE, v);
        }
        resp
    }

    /// The actor written in audit events: the admin key's id, as the
    /// admin API writes it.
    pub(crate) fn actor(&self) -> &str {
        &self.admin_key.id
    }
}

/// Whether an admin key may still open the console: active by the same
/// rule the verifier applies ([`KeyGrant::state`]) and holding `admin`.
pub(crate) fn key_state(r: &KeyRecord, now: i64) -> KeyState {
    let grant = KeyGrant {
        key_id: r.id.as_str().into(),
        owner: r.owner.as_str().into(),
        scopes: Scopes::parse(&r.scopes).unwrap_or_default(),
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        disabled: r.disabled,
        remaining_uses: r.remaining_uses,
        refill: match (r.refill.as_deref(), r.refill_amount) {
            (Some(e), Some(amount)) => portcullis_core::quota::Refill::parse(e)
                .map(|every| portcullis_core::quota::RefillPlan { every, amount }),
            _ => None,
        },
        // The record does not say when the uses were last refilled; a
        // refilled key counts as due, so only a key used up for good
        // reads as used up here (the verifier still decides its requests).
        refilled_at: 0,
        rate_limit: None,
    };
    grant.state(now)
}

impl Console {
    pub(crate) fn now(&self) -> i64 {
        self.opts.clock.now()
    }

    /// The signed-in request, or the answer that sends the browser to
    /// sign in (clearing a cookie that no longer opens a session).
    pub(crate) async fn signed_in(&self, headers: &HeaderMap) -> Result<Ctx, Box<Response>> {
        let now = self.now();
        let opened = match session::cookie(headers, COOKIE) {
            None => Err(Ended::Missing),
            Some(v) => self.sessions.open(v, now),
        };
        let s = match opened {
            Ok(s) => s,
            Err(e) => {
                if e != Ended::Missing {
                    tracing::info!(target: "portcullis::console", reason = e.reason(), "console session refused");
                }
                let why = match e {
                    Ended::Expired | Ended::Idle => "?ended=expired",
                    Ended::SignedOut => "?ended=signed-out",
                    Ended::Invalid => "?ended=invalid",
                    Ended::Missing => "",
                };
                return Err(Box::new(to_sign_in(why)));
            }
        };
        let key = match self.admin.keys.store().get_key(&s.key_id).await {
            Ok(k) => Some(k),
            Err(StoreError::NotFound) => None,
            Err(e) => {
                tracing::error!(target: "portcullis::console", error = %e, "store error in the console");
                return Err(Box::new(pages::refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Store unavailable",
                    "The store did not answer; try again shortly.",
                )));
            }
        };
        let key = match key {
            Some(k)
                if key_state(&k, now) == KeyState::Active
                    && k.remaining_uses.is_none()
                    && k.refill.is_none()
                    && Scopes::parse(&k.scopes).is_ok_and(|sc| sc.contains(ADMIN_SCOPE)) =>
            {
                k
            }
            _ => {
                tracing::info!(target: "portcullis::console", reason = "console_admin_key_inactive", key_id = %s.key_id, "console session ended: its admin key is no longer active");
                return Err(Box::new(to_sign_in("?ended=key")));
            }
        };
        let renewed = Session {
            seen: now,
            ..s.clone()
        };
        let left = s
            .issued
            .saturating_add(self.sessions.ttl())
            .saturating_sub(now);
        Ok(Ctx {
            csrf: self.sessions.csrf_token(&s),
            set_cookie: session::set_cookie(&self.sessions.seal(&renewed), left),
            session: s,
            admin_key: key,
        })
    }

    /// A change (POST) from a signed-in page: refused with 403 if another
    /// site sent it, then the session, then its CSRF token.
    pub(crate) async fn change(
        &self,
        headers: &HeaderMap,
        token: Option<&str>,
    ) -> Result<Ctx, Box<Response>> {
        cross_site(headers)?;
        let ctx = self.signed_in(headers).await?;
        if let Err(e) = self.sessions.check_csrf(&ctx.session, token) {
            return Err(Box::new(csrf_refused(e)));
        }
        Ok(ctx)
    }
}

/// Refuses a request another site sent: `Sec-Fetch-Site` first, else an
/// `Origin` that is not this host's (the core's rule, the one the
/// gateway's cookie routes use).
pub(crate) fn cross_site(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let own = format!("http://{host}");
    // Behind a TLS proxy the browser's origin is https with the same host.
    let trusted = [format!("https://{host}")];
    csrf::check_origin(headers, Some(&own), &trusted).map_err(|e| Box::new(csrf_refused(e)))
}

fn csrf_refused(e: CsrfError) -> Response {
    tracing::info!(target: "portcullis::console", reason = e.reason(), "console change refused (CSRF)");
    let text = match e {
        CsrfError::CrossSite | CsrfError::ForeignOrigin => {
            "This request came from another site, so it was refused. Nothing was changed."
        }
        CsrfError::MissingToken | CsrfError::BadToken => {
            "The form's security token was missing or did not match this session, so nothing was changed. Go back, reload the page and try again."
        }
    };
    pages::refusal(StatusCode::FORBIDDEN, "Request refused", text)
}

/// 303 to the sign-in page, clearing the session cookie.
fn to_sign_in(query: &str) -> Response {
    let mut r = redirect(&format!("/console/sign-in{query}"));
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

/// 303 See Other to `to` (after a change: the browser GETs the result).
pub(crate) fn redirect(to: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// An HTML page.
pub(crate) fn html(status: StatusCode, body: maud::Markup) -> Response {
    let mut r = Response::new(Body::from(body.into_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// A path segment, percent-encoded (ids and names go into links).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(host: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        m
    }

    #[test]
    fn hosts() {
        for ok in [
            "127.0.0.1:8081",
            "localhost:1",
            "[::1]:8081",
            "LOCALHOST",
            "10.0.0.2",
        ] {
            assert!(local_host_allowed(&h(ok), &[]), "{ok}");
        }
        for bad in [
            "evil.example:8081",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1]evil.example",
            "[::1]:80:80",
            "127.0.0.1:99999",
        ] {
            assert!(!local_host_allowed(&h(bad), &[]), "{bad}");
        }
        assert!(local_host_allowed(
            &h("admin.example:443"),
            &["admin.example".into()]
        ));
        assert!(!local_host_allowed(&HeaderMap::new(), &[]));
    }

    #[test]
    fn loopback_hosts() {
        for yes in [
            "127.0.0.1:8081",
            "127.5.0.1",
            "[::1]:8081",
            "localhost:8081",
        ] {
            assert!(loopback_host(&h(yes)), "{yes}");
        }
        for no in ["10.0.0.2:8081", "admin.example", "localhost.example"] {
            assert!(!loopback_host(&h(no)), "{no}");
        }
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(seg("key_Ab9"), "key_Ab9");
        assert_eq!(seg("a/b c?<"), "a%2Fb%20c%3F%3C");
    }
}
