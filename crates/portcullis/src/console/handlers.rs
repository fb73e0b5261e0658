//! What each console route reads, checks and answers. Every page first
//! passes [`Console::signed_in`]; every change (a POST) first passes
//! [`Console::change`] (another site's request, then the session, then
//! the form's CSRF token). Changes go through the same services as the
//! admin API, so they follow the same rules and leave the same audit
//! events, with the admin key's id as the actor.

use crate::admin::rules;
use crate::analytics::{Span, TopOrder, UsagePoint};
use crate::auth::guard::{Head, Policy};
use crate::auth::identity::IdentityError;
use crate::auth::keys::KeyError;
use crate::auth::specs::KeyRequest;
use crate::console::pages::{self, AuditFilters, Check, CreateForm, KeyFilters, KeyRow, KeyView};
use crate::console::session::{self, Session};
use crate::console::{Console, Ctx, chart, cross_site, html, key_state, redirect, seg};
use crate::store::{
    ADMIN_SCOPE, AuditEvent, KeyFilter, KeyRecord, KeySettings, LastAdmin, StoreError,
};
use axum::body::Body;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use portcullis_core::key::KeyState;
use portcullis_core::time::parse_duration;
use portcullis_core::{Scheme, SchemeSet, Scopes};
use serde::Deserialize;

/// `/console` → `/console/`.
pub(crate) async fn to_console() -> Response {
    redirect("/console/")
}

fn query<T: Default>(q: Result<Query<T>, QueryRejection>) -> T {
    q.map(|Query(q)| q).unwrap_or_default()
}

fn form<T: Default>(f: Result<Form<T>, FormRejection>) -> T {
    // A body that is not a form counts as an empty one: it then fails
    // the CSRF check (403) like any other change without a token.
    f.map(|Form(f)| f).unwrap_or_default()
}

fn nonempty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn store_down(e: &StoreError) -> Response {
    tracing::error!(target: "portcullis::console", error = %e, "store error in the console");
    pages::refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        "The store did not answer; try again shortly.",
    )
}

// ---- sign-in -----------------------------------------------------------

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct SignInQuery {
    ended: String,
}

pub(crate) async fn sign_in_form(
    State(st): State<Console>,
    headers: HeaderMap,
    q: Result<Query<SignInQuery>, QueryRejection>,
) -> Response {
    let q = query(q);
    if session::cookie(&headers, session::COOKIE).is_some()
        && let Ok(ctx) = st.signed_in(&headers).await
    {
        return ctx.answer(redirect("/console/"));
    }
    let note = match q.ended.as_str() {
        "expired" => Some("Your session ended. Sign in again."),
        "signed-out" => Some("You have signed out."),
        "key" => Some("Your session ended: the admin key it was opened with is no longer active."),
        "invalid" => Some("Your session could not be read. Sign in again."),
        _ => None,
    };
    let note = note.or_else(|| {
        // Browsers keep the Secure session cookie over plain HTTP only on
        // loopback; elsewhere sign-in would come straight back here with
        // no word why. (Behind a TLS proxy the note is harmless.)
        (!crate::console::loopback_host(&headers)).then_some(
            "This browser keeps the console's session cookie only over HTTPS or on localhost / 127.0.0.1. If signing in brings you back here, open the console through an SSH tunnel to the admin listener, or put TLS in front of it.",
        )
    });
    html(StatusCode::OK, pages::sign_in(note, false))
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct SignInForm {
    key: String,
}

/// Exchanges an admin key for a session cookie. The key is checked by the
/// admin API's own guard (so its verifier, cache and rules), used once,
/// and never stored; a refusal does not say what was wrong.
pub(crate) async fn sign_in(
    State(st): State<Console>,
    headers: HeaderMap,
    f: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    if let Err(r) = cross_site(&headers) {
        return *r;
    }
    let f = form(f);
    let refused = || html(StatusCode::UNAUTHORIZED, pages::sign_in(None, true));
    let key = f.key.trim();
    let Ok(value) = HeaderValue::from_str(key) else {
        return refused();
    };
    if key.is_empty() {
        return refused();
    }
    let mut h = HeaderMap::new();
    h.insert(st.admin.guard.names().header.clone(), value);
    let policy = Policy {
        schemes: SchemeSet::new(&[Scheme::ApiKeyHeader]),
        scopes: Scopes::parse(ADMIN_SCOPE).unwrap_or_default(),
    };
    let head = Head::new(&http::Method::POST, &h, None);
    let granted = match st.admin.guard.check(&policy, &head).await {
        Ok(g) => g,
        Err(d) => {
            tracing::info!(
                target: "portcullis::console",
                reason = d.problem.log_reason,
                key_id = d.credential_id.as_deref().unwrap_or(""),
                "console sign-in refused"
            );
            if d.problem.status() >= 500 {
                return pages::refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Store unavailable",
                    "The key could not be checked right now; try again shortly.",
                );
            }
            return refused();
        }
    };
    let key_id = granted
        .principal
        .map(|p| p.credential_id)
        .unwrap_or_default();
    // Sessions are re-checked against the key's stored record, so only a
    // managed key (not a static one from the config) opens one.
    let record = match st.admin.keys.store().get_key(&key_id).await {
        Ok(r) if session::plain_id(&key_id) => r,
        _ => {
            tracing::info!(target: "portcullis::console", reason = "console_key_not_managed", "console sign-in refused");
            return refused();
        }
    };
    // A key with a number of uses would spend one here and then act
    // without limit for as long as the session lasts: only an admin key
    // with unlimited uses opens a session (docs/console.md).
    if record.remaining_uses.is_some() || record.refill.is_some() {
        tracing::info!(target: "portcullis::console", reason = "console_key_has_uses", key_id = %key_id, "console sign-in refused");
        return html(StatusCode::UNAUTHORIZED, pages::sign_in(None, true));
    }
    let Some(sid) = session::new_sid() else {
        return pages::refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No randomness",
            "The system random source failed; the session could not be made.",
        );
    };
    let now = st.now();
    let s = Session {
        key_id: key_id.to_string(),
        sid,
        issued: now,
        seen: now,
    };
    tracing::info!(target: "portcullis::console", key_id = %s.key_id, "console sign-in");
    let mut r = redirect("/console/");
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        &st.sessions.seal(&s),
        st.sessions.ttl(),
    )) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct CsrfOnly {
    csrf: String,
}

pub(crate) async fn sign_out(
    State(st): State<Console>,
    headers: HeaderMap,
    f: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    let f = form(f);
    let ctx = match st.change(&headers, Some(&f.csrf)).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    st.sessions.end(&ctx.session);
    tracing::info!(target: "portcullis::console", key_id = %ctx.session.key_id, "console sign-out");
    let mut r = redirect("/console/sign-in?ended=signed-out");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

// ---- keys --------------------------------------------------------------

/// How many keys a page of the list shows, and how many it looks through
/// at most to fill one (filters other than the owner are applied here,
/// over the store's pages).
const PAGE: usize = 50;
const SCAN: usize = 10_000;

fn status_matches(filter: &str, s: KeyState) -> bool {
    match filter {
        "" => s != KeyState::Revoked,
        "all" => true,
        "active" => s == KeyState::Active,
        "disabled" => s == KeyState::Disabled,
        "expired" => s == KeyState::Expired,
        "used-up" => matches!(s, KeyState::UsedUp | KeyState::Exhausted),
        "revoked" => s == KeyState::Revoked,
        _ => true,
    }
}

/// The last 24 hours of a key, per hour; `None` if the store failed.
async fn day_usage(st: &Console, id: &str, now: i64) -> Option<Vec<UsagePoint>> {
    let from = Span::Hour.start_of(now) - 23 * 3600;
    match st
        .admin
        .keys
        .store()
        .usage_series(id, Span::Hour, from, now + 1)
        .await
    {
        Ok(p) => Some(chart::filled(&p, Span::Hour, from, now)),
        Err(e) => {
            tracing::warn!(target: "portcullis::console", error = %e, "usage unavailable");
            None
        }
    }
}

fn done_message(done: &str) -> Option<&'static str> {
    Some(match done {
        "revoked" => "The key is revoked.",
        "disabled" => "The key is disabled.",
        "enabled" => "The key is enabled.",
        "updated" => "The key's settings are changed; every gateway applies them within a second.",
        "user-disabled" => "The user is disabled; their sessions and tokens have ended.",
        "user-enabled" => "The user is enabled.",
        "client-revoked" => "The client is revoked.",
        _ => return None,
    })
}

pub(crate) async fn keys_list(
    State(st): State<Console>,
    headers: HeaderMap,
    q: Result<Query<KeyFilters>, QueryRejection>,
) -> Response {
    let ctx = match st.signed_in(&headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let f = query(q);
    let now = st.now();
    let include_revoked = matches!(f.status.as_str(), "revoked" | "all");
    let mut after = nonempty(&f.after).map(str::to_owned);
    let (mut found, mut scanned, mut next) = (Vec::new(), 0usize, None);
    let name = f.name.trim().to_lowercase();
    let scope = f.scope.trim();
    'pages: loop {
        let filter = KeyFilter {
            owner: nonempty(&f.owner).map(str::to_owned),
            include_revoked,
            after: after.clone(),
            limit: 500,
        };
        let page = match st.admin.keys.list(&filter).await {
            Ok(p) => p,
            Err(KeyError::Store(e)) => return store_down(&e),
            Err(_) => Vec::new(),
        };
        let full = page.len() == 500;
        for k in page {
            scanned += 1;
            after = Some(k.id.clone());
            let state = key_state(&k, now);
            let ok = status_matches(&f.status, state)
                && (name.is_empty() || k.name.to_lowercase().contains(&name))
                && (scope.is_empty() || k.scopes.split(' ').any(|s| s == scope));
            if ok {
                found.push((k, state));
                if found.len() == PAGE {
                    next = after.clone();
                    break 'pages;
                }
            }
        }
        if !full || scanned >= SCAN {
            if full {
                next = after.clone();
            }
            break;
        }
    }
    let mut rows = Vec::with_capacity(found.len());
    for (key, state) in found {
        let usage = day_usage(&st, &key.id, now).await;
        rows.push(KeyRow { key, state, usage });
    }
    // The overview, on the unfiltered first page only.
    let unfiltered = [&f.status, &f.owner, &f.scope, &f.name, &f.after]
        .iter()
        .all(|v| v.is_empty());
    let top = if unfiltered {
        let from = Span::Hour.start_of(now) - 23 * 3600;
        let store = st.admin.keys.store();
        match (
            store
                .usage_top(Span::Hour, from, now + 1, TopOrder::Requests, 5)
                .await,
            store
                .usage_top(Span::Hour, from, now + 1, TopOrder::Refusals, 5)
                .await,
        ) {
            (Ok(requests), Ok(mut refusals)) => {
                refusals.retain(|t| t.counts.refused() > 0);
                Some(pages::Top { requests, refusals })
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(target: "portcullis::console", error = %e, "usage unavailable");
                None
            }
        }
    } else {
        None
    };
    let page = pages::keys_list(
        &ctx,
        &f,
        &rows,
        next.as_deref(),
        done_message(&f.done),
        top.as_ref(),
    );
    ctx.answer(html(StatusCode::OK, page))
}

pub(crate) async fn new_key_form(State(st): State<Console>, headers: HeaderMap) -> Response {
    match st.signed_in(&headers).await {
        Ok(ctx) => {
            let page = pages::new_key(&ctx, &CreateForm::default(), None);
            ctx.answer(html(StatusCode::OK, page))
        }
        Err(r) => *r,
    }
}

/// The most uses a key may be given: 2^53 - 1, as the admin API's
/// document says.
const MAX_USES: i64 = (1 << 53) - 1;

/// The create form's values as a [`KeyRequest`], by the admin API's
/// rules for each member.
fn key_request(f: &CreateForm) -> Result<KeyRequest, String> {
    let opt = |s: &str| nonempty(s).map(str::to_owned);
    rules::LABEL.check("name", &f.name)?;
    if let Some(o) = opt(&f.owner) {
        rules::LABEL.check("owner", &o)?;
    }
    if let Some(e) = opt(&f.env) {
        rules::ENV.check("env", &e)?;
    }
    if let Some(e) = opt(&f.expires_in) {
        rules::LIFETIME.check("expires in", &e)?;
    }
    if let Some(r) = opt(&f.rate_limit) {
        rules::RATE_LIMIT.check("rate limit", &r)?;
    }
    let scopes = crate::auth::specs::split_list(&f.scopes);
    for (i, s) in scopes.iter().enumerate() {
        rules::SCOPE.check(&format!("scope {}", i + 1), s)?;
    }
    let uses = match opt(&f.uses) {
        None => None,
        Some(u) => Some(
            u.parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_USES).contains(n))
                .ok_or("uses: a whole number, at least 1")?,
        ),
    };
    Ok(KeyRequest {
        name: f.name.clone(),
        owner: opt(&f.owner),
        scopes: Some(scopes.join(" ")),
        env: opt(&f.env),
        expires_in: opt(&f.expires_in),
        uses,
        rate_limit: opt(&f.rate_limit),
        ..KeyRequest::default()
    })
}

pub(crate) async fn create_key(
    State(st): State<Console>,
    headers: HeaderMap,
    f: Result<Form<CreateForm>, FormRejection>,
) -> Response {
    let f = form(f);
    let ctx = match st.change(&headers, Some(&f.csrf)).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let again = |e: &str, status| ctx.answer(html(status, pages::new_key(&ctx, &f, Some(e))));
    let spec = match key_request(&f)
        .map_err(KeyError::Invalid)
        .and_then(KeyRequest::into_spec)
    {
        Ok(s) => s,
        Err(e) => return again(&e.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
    };
    match st.admin.keys.create(ctx.actor(), &spec).await {
        Ok(c) => {
            let page = pages::created(&ctx, &c.record, c.key.expose(), "Key created");
            ctx.answer(html(StatusCode::CREATED, page))
        }
        Err(KeyError::Store(e)) => store_down(&e),
        Err(e) => again(&e.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct KeyQuery {
    span: String,
    done: String,
}

/// The audit events about key `id` (its own, and a rotation that made
/// it), newest first, from the newest events.
async fn key_events(st: &Console, id: &str) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    let mut before = None;
    for _ in 0..4 {
        let page = match st.admin.keys.store().list_audit(before, 500).await {
            Ok(p) => p,
            Err(_) => break,
        };
        let n = page.len();
        for e in page {
            before = Some(e.id);
            let about = e.target.as_deref() == Some(id)
                || e.detail.get("replacement").and_then(|v| v.as_str()) == Some(id);
            if about {
                out.push(e);
                if out.len() == 20 {
                    return out;
                }
            }
        }
        if n < 500 {
            break;
        }
    }
    out
}

async fn key_view(
    st: &Console,
    ctx: &Ctx,
    key: &KeyRecord,
    span: Span,
    flash: Option<&str>,
    error: Option<&str>,
) -> maud::Markup {
    let now = st.now();
    let from = match span {
        Span::Minute => Span::Minute.start_of(now) - 59 * 60,
        Span::Hour => Span::Hour.start_of(now) - 47 * 3600,
        Span::Day => Span::Day.start_of(now) - 29 * 86_400,
    };
    let usage = match st
        .admin
        .keys
        .store()
        .usage_series(&key.id, span, from, now + 1)
        .await
    {
        Ok(p) => Some(chart::filled(&p, span, from, now)),
        Err(e) => {
            tracing::warn!(target: "portcullis::console", error = %e, "usage unavailable");
            None
        }
    };
    let events = key_events(st, &key.id).await;
    pages::key_page(
        ctx,
        &KeyView {
            key,
            state: key_state(key, now),
            span,
            usage,
            events: &events,
            flash,
            error,
        },
    )
}

pub(crate) async fn key_page(
    State(st): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<KeyQuery>, QueryRejection>,
) -> Response {
    let ctx = match st.signed_in(&headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let q = query(q);
    let key = match st.admin.keys.show(&id).await {
        Ok(k) => k,
        Err(KeyError::Store(e)) => return store_down(&e),
        Err(_) => return ctx.answer(html(StatusCode::NOT_FOUND, pages::not_found(Some(&ctx)))),
    };
    let span = Span::parse(&q.span).unwrap_or(Span::Hour);
    let page = key_view(&st, &ctx, &key, span, done_message(&q.done), None).await;
    ctx.answer(html(StatusCode::OK, page))
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct ActionForm {
    csrf: String,
    grace: String,
    confirm: String,
    scopes: String,
    rate_limit: String,
    uses: String,
    /// The uses the page showed (a hidden field).
    uses_was: String,
}

/// The settings form's values, by the admin API's rules for each member.
fn key_settings(f: &ActionForm) -> Result<KeySettings, KeyError> {
    let list = crate::auth::specs::split_list(&f.scopes);
    for (i, s) in list.iter().enumerate() {
        rules::SCOPE
            .check(&format!("scope {}", i + 1), s)
            .map_err(KeyError::Invalid)?;
    }
    let scopes = Scopes::from_iter_checked(list.iter().map(String::as_str))
        .map_err(|e| KeyError::Invalid(format!("scopes: {e}")))?;
    let rate_limit = nonempty(&f.rate_limit).map(str::to_owned);
    if let Some(r) = &rate_limit {
        rules::RATE_LIMIT
            .check("rate limit", r)
            .map_err(KeyError::Invalid)?;
    }
    // Uses are spent while the page is open: write them only when the
    // admin changed the number the page showed, else saving the scopes
    // would give back what was spent meanwhile (and a used-up key's 0
    // could not be saved at all).
    let remaining_uses = if f.uses.trim() == f.uses_was.trim() {
        None
    } else {
        Some(match nonempty(&f.uses) {
            None => None,
            Some(u) => Some(
                u.parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_USES).contains(n))
                    .ok_or_else(|| {
                        KeyError::Invalid(
                            "uses: a whole number, at least 1 (empty: unlimited)".into(),
                        )
                    })?,
            ),
        })
    };
    Ok(KeySettings {
        scopes: Some(scopes),
        rate_limit: Some(rate_limit),
        remaining_uses,
    })
}

/// Whether the last active admin key may go: as the admin API decides
/// (only when the admin guard holds a static admin key the console
/// cannot take away).
fn last_admin_rule(st: &Console) -> LastAdmin {
    if st.admin.guard.static_key_holds(ADMIN_SCOPE) {
        LastAdmin::Allow
    } else {
        LastAdmin::Protect
    }
}

fn key_error_status(e: &KeyError) -> StatusCode {
    match e {
        KeyError::NotFound(_) => StatusCode::NOT_FOUND,
        KeyError::Conflict(_) | KeyError::LastAdminKey { .. } => StatusCode::CONFLICT,
        KeyError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        KeyError::Random => StatusCode::INTERNAL_SERVER_ERROR,
        KeyError::Invalid(_) | KeyError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

pub(crate) async fn key_action(
    State(st): State<Console>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    f: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let f = form(f);
    let ctx = match st.change(&headers, Some(&f.csrf)).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let actor = ctx.actor().to_owned();
    let back = |done: &str| redirect(&format!("/console/keys/{}?done={done}", seg(&id)));
    let result: Result<Response, KeyError> = match action.as_str() {
        "revoke" if f.confirm != "yes" => Err(KeyError::Invalid(
            "Tick the box to confirm: revoking is final.".into(),
        )),
        "revoke" => st
            .admin
            .keys
            .revoke_with(&actor, &id, last_admin_rule(&st))
            .await
            .map(|_| back("revoked")),
        "disable" => st
            .admin
            .keys
            .set_disabled_with(&actor, &id, true, last_admin_rule(&st))
            .await
            .map(|_| back("disabled")),
        "enable" => st
            .admin
            .keys
            .set_disabled(&actor, &id, false)
            .await
            .map(|_| back("enabled")),
        "settings" => match key_settings(&f) {
            Ok(settings) => st
                .admin
                .keys
                .update(&actor, &id, &settings, last_admin_rule(&st))
                .await
                .map(|_| back("updated")),
            Err(e) => Err(e),
        },
        "rotate" => {
            let grace = f.grace.trim();
            match rules::GRACE
                .check("grace", grace)
                .map_err(KeyError::Invalid)
                .and_then(|_| {
                    parse_duration(grace).map_err(|e| KeyError::Invalid(format!("grace: {e}")))
                }) {
                Err(e) => Err(e),
                Ok(secs) => match st.admin.keys.rotate(&actor, &id, secs).await {
                    Ok(c) => Ok(html(
                        StatusCode::CREATED,
                        pages::created(
                            &ctx,
                            &c.record,
                            c.key.expose(),
                            "Key rotated: the replacement",
                        ),
                    )),
                    Err(e) => Err(e),
                },
            }
        }
        _ => return ctx.answer(html(StatusCode::NOT_FOUND, pages::not_found(Some(&ctx)))),
    };
    match result {
        Ok(r) => ctx.answer(r),
        Err(KeyError::Store(e)) => store_down(&e),
        Err(e) => {
            // Shown on the key's page, beside the actions.
            let status = key_error_status(&e);
            let msg = e.to_string();
            match st.admin.keys.show(&id).await {
                Ok(key) => {
                    let page = key_view(&st, &ctx, &key, Span::Hour, None, Some(&msg)).await;
                    ctx.answer(html(status, page))
                }
                Err(_) => ctx.answer(html(StatusCode::NOT_FOUND, pages::not_found(Some(&ctx)))),
            }
        }
    }
}

// ---- users and clients -----------------------------------------------------

#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct DoneQuery {
    done: String,
}

fn identity_failed(e: &IdentityError) -> Response {
    match e {
        IdentityError::Store(StoreError::NotFound) => pages::refusal(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such user or client.",
        ),
        IdentityError::Store(StoreError::Conflict(m)) => {
            pages::refusal(StatusCode::CONFLICT, "Not changed", m)
        }
        IdentityError::Invalid(m) => {
            pages::refusal(StatusCode::UNPROCESSABLE_ENTITY, "Not changed", m)
        }
        IdentityError::Store(e) => store_down(e),
        _ => pages::refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Not changed",
            "The change failed; see the gateway's log.",
        ),
    }
}

pub(crate) async fn users(
    State(st): State<Console>,
    headers: HeaderMap,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    identity_list(
        &st,
        &headers,
        q,
        async |id| id.list_users().await,
        pages::users,
    )
    .await
}

/// A page listing what the identity service holds (users, clients); none
/// when the gateway runs without one.
async fn identity_list<T>(
    st: &Console,
    headers: &HeaderMap,
    q: Result<Query<DoneQuery>, QueryRejection>,
    list: impl AsyncFnOnce(&crate::auth::identity::Identity) -> Result<Vec<T>, IdentityError>,
    page: fn(&Ctx, Option<&[T]>, Option<&str>) -> maud::Markup,
) -> Response {
    let ctx = match st.signed_in(headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let q = query(q);
    let items = match &st.admin.identity {
        None => None,
        Some(id) => match list(id).await {
            Ok(l) => Some(l),
            Err(e) => return identity_failed(&e),
        },
    };
    let body = page(&ctx, items.as_deref(), done_message(&q.done));
    ctx.answer(html(StatusCode::OK, body))
}

pub(crate) async fn user_action(
    State(st): State<Console>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    f: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    let f = form(f);
    let ctx = match st.change(&headers, Some(&f.csrf)).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(identity) = &st.admin.identity else {
        return ctx.answer(html(StatusCode::NOT_FOUND, pages::not_found(Some(&ctx))));
    };
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return ctx.answer(html(StatusCode::NOT_FOUND, pages::not_found(Some(&ctx)))),
    };
    match identity
        .set_user_disabled(&name, disabled, ctx.actor())
        .await
    {
        Ok(_) => ctx.answer(redirect(if disabled {
            "/console/users?done=user-disabled"
        } else {
            "/console/users?done=user-enabled"
        })),
        Err(e) => ctx.answer(identity_failed(&e)),
    }
}

pub(crate) async fn clients(
    State(st): State<Console>,
    headers: HeaderMap,
    q: Result<Query<DoneQuery>, QueryRejection>,
) -> Response {
    identity_list(
        &st,
        &headers,
        q,
        async |id| id.list_clients().await,
        pages::clients,
    )
    .await
}

pub(crate) async fn revoke_client(
    State(st): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let f = form(f);
    let ctx = match st.change(&headers, Some(&f.csrf)).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(identity) = &st.admin.identity else {
        return ctx.answer(html(StatusCode::NOT_FOUND, pages::not_found(Some(&ctx))));
    };
    if f.confirm != "yes" {
        return ctx.answer(pages::refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not changed",
            "Tick the box to confirm: revoking a client is final.",
        ));
    }
    match identity.revoke_client(&id, ctx.actor()).await {
        Ok(_) => ctx.answer(redirect("/console/clients?done=client-revoked")),
        Err(e) => ctx.answer(identity_failed(&e)),
    }
}

// ---- audit -------------------------------------------------------------------

pub(crate) async fn audit(
    State(st): State<Console>,
    headers: HeaderMap,
    q: Result<Query<AuditFilters>, QueryRejection>,
) -> Response {
    let ctx = match st.signed_in(&headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let f = query(q);
    let mut before = f.before.trim().parse::<i64>().ok();
    let (actor, action, target) = (f.actor.trim(), f.action.trim(), f.target.trim());
    let matches = |e: &AuditEvent| {
        (actor.is_empty() || e.actor == actor)
            && (action.is_empty()
                || e.action == action
                || (action.ends_with('.') && e.action.starts_with(action)))
            && (target.is_empty()
                || e.target.as_deref() == Some(target)
                || e.detail
                    .to_string()
                    .contains(&serde_json::Value::from(target).to_string()))
    };
    let (mut events, mut next, mut all) = (Vec::new(), None, true);
    // Up to 10 pages of 500 are looked through per answer.
    'pages: for _ in 0..10 {
        let page = match st.admin.keys.store().list_audit(before, 500).await {
            Ok(p) => p,
            Err(e) => return store_down(&e),
        };
        let n = page.len();
        for e in page {
            before = Some(e.id);
            if matches(&e) {
                events.push(e);
                if events.len() == 100 {
                    next = before;
                    all = false;
                    break 'pages;
                }
            }
        }
        if n < 500 {
            next = None;
            break;
        }
        next = before;
        all = false;
    }
    if all {
        next = None;
    }
    let page = pages::audit(&ctx, &f, &events, next, all);
    ctx.answer(html(StatusCode::OK, page))
}

// ---- health --------------------------------------------------------------------

pub(crate) async fn health(State(st): State<Console>, headers: HeaderMap) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let ctx = match st.signed_in(&headers).await {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let mut checks = Vec::new();
    let t = std::time::Instant::now();
    let ping = st.admin.keys.store().ping().await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    checks.push(Check {
        name: "Store",
        ok: ping.is_ok(),
        summary: match &ping {
            Ok(()) => "The store answers.".into(),
            Err(e) => format!("The store does not answer: {e}"),
        },
        facts: vec![("Ping", format!("{ms:.1} ms"))],
    });
    if let Some(v) = st.admin.guard.verifier() {
        let h = v.health();
        let (known, unknown) = v.cache_sizes();
        checks.push(Check {
            name: "Key verification",
            ok: h.ready(),
            summary: if h.ready() {
                "Keys are verified from the caches and the store; the change log is read.".into()
            } else {
                "Keys are refused with 503: the store is unreachable or the change log has not been read for longer than stale_grace.".into()
            },
            facts: vec![
                ("Change log last read", format!("{} s ago", h.last_poll_age_secs)),
                ("Store breaker", if h.breaker_open { "open" } else { "closed" }.into()),
                ("Caches stale", if h.stale { "yes" } else { "no" }.into()),
                ("Known keys cached", known.to_string()),
                ("Unknown keys remembered", unknown.to_string()),
                ("Key lookups in the store since start", v.store_key_lookups().to_string()),
            ],
        });
    }
    match &st.admin.limiter {
        Some(l) => {
            let s = l.stats();
            let breaker = l.breaker_state().as_str();
            checks.push(Check {
                name: "Rate limiter",
                ok: breaker == "closed",
                summary: if l.is_shared() {
                    format!(
                        "Counters in Redis; while Redis is down: {}.",
                        l.on_backend_error().as_str()
                    )
                } else {
                    "Counters in this process's memory.".into()
                },
                facts: vec![
                    (
                        "Backend",
                        if l.is_shared() { "redis" } else { "memory" }.into(),
                    ),
                    ("Redis breaker", breaker.into()),
                    ("Counters in memory", l.local().len().to_string()),
                    ("Decisions by Redis", s.remote.load(Relaxed).to_string()),
                    (
                        "Decisions without Redis",
                        s.fallback.load(Relaxed).to_string(),
                    ),
                    ("Redis errors", s.errors.load(Relaxed).to_string()),
                    (
                        "Times the breaker opened",
                        s.opened.load(Relaxed).to_string(),
                    ),
                ],
            });
        }
        None => checks.push(Check {
            name: "Rate limiter",
            ok: true,
            summary: "This gateway has no rate limiter.".into(),
            facts: vec![],
        }),
    }
    match &st.opts.analytics {
        Some(a) => {
            let s = a.stats();
            checks.push(Check {
                name: "Per-key analytics",
                ok: s.dropped == 0,
                summary: if s.dropped == 0 {
                    format!(
                        "Decisions are counted in memory and written every {} s.",
                        a.config().flush_interval.as_secs_f64()
                    )
                } else {
                    "Some counts were dropped after the store refused them repeatedly; the charts miss them.".into()
                },
                facts: vec![
                    ("Decisions counted", s.counted.to_string()),
                    ("Keys in the current minute", s.keys_in_window.to_string()),
                    ("Flushes", s.flushes.to_string()),
                    ("Rows written", s.rows_written.to_string()),
                    ("Failed flushes", s.flush_failures.to_string()),
                    ("Decisions dropped", s.dropped.to_string()),
                ],
            });
        }
        None => checks.push(Check {
            name: "Per-key analytics",
            ok: true,
            summary: "Off on this gateway ([analytics] enabled = false): the charts stay empty."
                .into(),
            facts: vec![],
        }),
    }
    checks.push(Check {
        name: "Users and clients",
        ok: true,
        summary: if st.admin.identity.is_some() {
            "Configured.".into()
        } else {
            "Not configured on this gateway.".into()
        },
        facts: vec![],
    });
    ctx.answer(html(StatusCode::OK, pages::health(&ctx, &checks)))
}

// ---- assets and the rest ----------------------------------------------------------

/// The stylesheet and the script, under content-hashed names: cached for
/// a year (a new build has new names).
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let a = [&*pages::CSS, &*pages::JS]
        .into_iter()
        .find(|a| a.name == name);
    match a {
        Some(a) => {
            let mut r = Response::new(Body::from(a.body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
            r.headers_mut().insert(
                CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            r
        }
        None => html(StatusCode::NOT_FOUND, pages::not_found(None)),
    }
}

pub(crate) async fn not_found() -> Response {
    html(StatusCode::NOT_FOUND, pages::not_found(None))
}
