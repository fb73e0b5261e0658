//! The console's markup: the layout every page shares and each page's
//! body. maud escapes every value written with `( )`, so a key named
//! `<script>` is text. No inline script, no style attribute: the CSP
//! forbids both, and the one stylesheet and one script are assets.

use crate::analytics::{OVERFLOW_KEY, Span, UsagePoint, UsageTotal};
use crate::console::chart;
use crate::console::{Ctx, html, seg};
use crate::store::identity::{ClientRecord, UserRecord};
use crate::store::{AuditEvent, KeyRecord};
use axum::response::Response;
use http::StatusCode;
use maud::{DOCTYPE, Markup, html};
use portcullis_core::key::KeyState;
use portcullis_core::time::rfc3339;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// An embedded asset: its bytes, type and content-hashed name (so it can
/// be cached for good: a new build has a new name).
pub(crate) struct Asset {
    pub(crate) body: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) name: String,
}

fn asset(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    let digest = Sha256::digest(body.as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Asset {
        body,
        content_type,
        name: format!("{stem}-{hash}.{ext}"),
    }
}

pub(crate) static CSS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "console",
        "css",
        include_str!("assets/console.css"),
        "text/css; charset=utf-8",
    )
});
pub(crate) static JS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "console",
        "js",
        include_str!("assets/console.js"),
        "text/javascript; charset=utf-8",
    )
});

/// Which section a page belongs to (marked in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Keys,
    Users,
    Clients,
    Audit,
    Health,
    None,
}

/// The page around `body`.
pub(crate) fn layout(title: &str, nav: Nav, ctx: Option<&Ctx>, body: Markup) -> Markup {
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            @if n == nav { a href=(href) aria-current="page" { (label) } }
            @else { a href=(href) { (label) } }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · Portcullis console" }
                link rel="stylesheet" href=(format!("/console/assets/{}", CSS.name));
                script src=(format!("/console/assets/{}", JS.name)) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Portcullis console" }
                    @if let Some(c) = ctx {
                        nav aria-label="Sections" {
                            (item(Nav::Keys, "/console/", "Keys"))
                            (item(Nav::Users, "/console/users", "Users"))
                            (item(Nav::Clients, "/console/clients", "OAuth2 clients"))
                            (item(Nav::Audit, "/console/audit", "Audit log"))
                            (item(Nav::Health, "/console/health", "Health"))
                        }
                        span.who { "Signed in with " code { (c.admin_key.id) } }
                        form method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(c.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

/// A refusal, said plainly, with the status it carries.
pub(crate) fn refusal(status: StatusCode, title: &str, text: &str) -> Response {
    html(
        status,
        layout(
            title,
            Nav::None,
            None,
            html! {
                div.card {
                    h1 { (title) }
                    p { (text) }
                    p { a href="/console/" { "Back to the console" } }
                }
            },
        ),
    )
}

/// The CSRF field of a form.
pub(crate) fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// Status of a key, as a word and a CSS class.
pub(crate) fn status_word(s: KeyState) -> (&'static str, &'static str) {
    match s {
        KeyState::Active => ("active", "s-active"),
        KeyState::Expired => ("expired", "s-expired"),
        KeyState::Revoked => ("revoked", "s-revoked"),
        KeyState::Disabled => ("disabled", "s-disabled"),
        KeyState::UsedUp => ("used up", "s-used-up"),
        KeyState::Exhausted => ("exhausted until refill", "s-used-up"),
    }
}

fn when(t: Option<i64>) -> Markup {
    match t {
        Some(t) => html! { time datetime=(rfc3339(t)) { (rfc3339(t)) } },
        None => html! { span.muted { "never" } },
    }
}

/// The sign-in page. `note` says why the last session ended; `refused`
/// that the key given was not accepted (without saying why).
pub(crate) fn sign_in(note: Option<&str>, refused: bool) -> Markup {
    layout(
        "Sign in",
        Nav::None,
        None,
        html! {
            div.signin.card {
                h1 { "Sign in" }
                @if refused {
                    p.flash.bad role="alert" #sign-in-error { "That key was not accepted. Check it and try again." }
                }
                @if let Some(n) = note {
                    p.flash role="status" { (n) }
                }
                form method="post" action="/console/sign-in" autocomplete="off" {
                    div.field {
                        label for="key" { "Admin API key (scope admin)" }
                        input #key.wide type="password" name="key" required autocomplete="off" spellcheck="false" autofocus;
                    }
                    button type="submit" { "Sign in" }
                }
                p.muted {
                    "The key is checked once and is not kept: the console gives this browser a session cookie instead. "
                    "Create an admin key with " code { "portcullis init" } " or " code { "portcullis keys create --scopes admin" } "."
                }
            }
        },
    )
}

/// One row of the keys list.
pub(crate) struct KeyRow {
    pub(crate) key: KeyRecord,
    pub(crate) state: KeyState,
    pub(crate) usage: Option<Vec<UsagePoint>>,
}

/// The keys list's filters, as given.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct KeyFilters {
    pub(crate) status: String,
    pub(crate) owner: String,
    pub(crate) scope: String,
    pub(crate) name: String,
    pub(crate) after: String,
    pub(crate) done: String,
}

fn selected(a: &str, b: &str) -> Option<&'static str> {
    (a == b).then_some("selected")
}

/// The busiest and the most refused callers of the last 24 hours.
pub(crate) struct Top {
    pub(crate) requests: Vec<UsageTotal>,
    pub(crate) refusals: Vec<UsageTotal>,
}

fn top_table(id: &str, caption: &str, rows: &[UsageTotal]) -> Markup {
    html! {
        div.top {
            h2 { (caption) }
            @if rows.is_empty() {
                p.muted { "Nothing counted yet." }
            } @else {
                table.stack id=(id) {
                    thead { tr { th { "Caller" } th.num { "Requests" } th.num { "Refused" } } }
                    tbody {
                        @for t in rows {
                            tr {
                                td data-label="Caller" {
                                    @if t.key_id == OVERFLOW_KEY {
                                        span.muted { "credentials that did not verify, and keys past the per-minute cap" }
                                    } @else if t.key_id.is_empty() {
                                        "user or client " code { (t.subject) }
                                    } @else {
                                        a href=(format!("/console/keys/{}", seg(&t.key_id))) { code { (t.key_id) } }
                                        @if !t.subject.is_empty() { " " span.muted { (t.subject) } }
                                    }
                                }
                                td.num data-label="Requests" { (t.counts.total()) }
                                td.num data-label="Refused" { (t.counts.refused()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn keys_list(
    ctx: &Ctx,
    f: &KeyFilters,
    rows: &[KeyRow],
    next: Option<&str>,
    flash: Option<&str>,
    top: Option<&Top>,
) -> Markup {
    let next_href = next.map(|after| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &f.status)
            .append_pair("owner", &f.owner)
            .append_pair("scope", &f.scope)
            .append_pair("name", &f.name)
            .append_pair("after", after)
            .finish();
        format!("/console/keys?{q}")
    });
    layout(
        "Keys",
        Nav::Keys,
        Some(ctx),
        html! {
            h1 { "API keys" }
            @if let Some(m) = flash { p.flash.ok role="status" { (m) } }
            p { a.button href="/console/keys/new" { "Create a key" } }
            form.filters.card method="get" action="/console/keys" role="search" {
                div {
                    label for="f-status" { "Status" }
                    select #f-status name="status" {
                        @for (v, l) in [("", "any but revoked"), ("active", "active"), ("disabled", "disabled"), ("expired", "expired"), ("used-up", "used up"), ("revoked", "revoked"), ("all", "all")] {
                            option value=(v) selected=[selected(&f.status, v)] { (l) }
                        }
                    }
                }
                div { label for="f-owner" { "Owner" } input #f-owner type="text" name="owner" value=(f.owner); }
                div { label for="f-scope" { "Scope" } input #f-scope type="text" name="scope" value=(f.scope); }
                div { label for="f-name" { "Name contains" } input #f-name type="text" name="name" value=(f.name); }
                div { button type="submit" { "Filter" } }
            }
            @if rows.is_empty() {
                p.muted { "No keys match." }
            } @else {
                div.table-wrap {
                    table.stack #keys {
                        thead { tr {
                            th { "Key" } th { "Status" } th { "Owner" } th { "Scopes" } th { "Last used" } th { "Last 24 hours" }
                        } }
                        tbody {
                            @for r in rows {
                                @let (word, class) = status_word(r.state);
                                tr data-key-id=(r.key.id) {
                                    td data-label="Key" {
                                        a href=(format!("/console/keys/{}", seg(&r.key.id))) { (r.key.name) }
                                        br; code.muted { (r.key.id) } " " code.muted { (r.key.prefix) "…" }
                                    }
                                    td data-label="Status" { span class=(format!("badge {class}")) { (word) } }
                                    td data-label="Owner" { (r.key.owner) }
                                    td data-label="Scopes" { code { (r.key.scopes) } }
                                    td data-label="Last used" { (when(r.key.last_used_at)) }
                                    td data-label="Last 24 hours" {
                                        @match &r.usage {
                                            Some(u) => (chart::sparkline(u, "in the last 24 hours")),
                                            None => span.muted { "–" },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(h) = next_href { p.pager { a href=(h) rel="next" { "Next page" } } }
            @if let Some(t) = top {
                section.card.tops aria-label="The last 24 hours" {
                    (top_table("top-requests", "Most requests, last 24 hours", &t.requests))
                    (top_table("top-refusals", "Most refusals, last 24 hours", &t.refusals))
                }
            }
        },
    )
}

/// The values of the create form, kept when it is shown again with an
/// error.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct CreateForm {
    pub(crate) csrf: String,
    pub(crate) name: String,
    pub(crate) owner: String,
    pub(crate) scopes: String,
    pub(crate) env: String,
    pub(crate) expires_in: String,
    pub(crate) uses: String,
    pub(crate) rate_limit: String,
}

fn text_field(id: &str, label: &str, value: &str, hint: &str, required: bool) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            input.wide id=(id) type="text" name=(id) value=(value) required[required] aria-describedby=(format!("{id}-hint"));
            div.muted id=(format!("{id}-hint")) { (hint) }
        }
    }
}

pub(crate) fn new_key(ctx: &Ctx, f: &CreateForm, error: Option<&str>) -> Markup {
    layout(
        "Create a key",
        Nav::Keys,
        Some(ctx),
        html! {
            h1 { "Create a key" }
            @if let Some(e) = error { p.flash.bad role="alert" { (e) } }
            form.card method="post" action="/console/keys" {
                (csrf_field(ctx))
                (text_field("name", "Name", &f.name, "1-128 characters.", true))
                (text_field("owner", "Owner", &f.owner, "Who the key acts for; the name when left empty.", false))
                (text_field("scopes", "Scopes", &f.scopes, "Space- or comma-separated, e.g. data:read data:write.", false))
                (text_field("env", "Environment", &f.env, "In the key's prefix (pc_<env>_); live when left empty.", false))
                (text_field("expires_in", "Expires in", &f.expires_in, "e.g. 30d or 12h; never when left empty.", false))
                (text_field("uses", "Uses", &f.uses, "A number of requests; unlimited when left empty.", false))
                (text_field("rate_limit", "Rate limit", &f.rate_limit, "e.g. 100/minute; the route's limit when left empty.", false))
                button type="submit" { "Create the key" }
            }
        },
    )
}

/// The one page that shows a new key's plaintext. It is never shown
/// again: only its SHA-256 is stored.
pub(crate) fn created(ctx: &Ctx, record: &KeyRecord, plaintext: &str, what: &str) -> Markup {
    layout(
        "Copy the new key",
        Nav::Keys,
        Some(ctx),
        html! {
            h1 { (what) }
            div.card {
                p { strong { "Copy this key now. " } "It is shown once, on this page, and cannot be shown again: only its hash is kept." }
                div.secret {
                    label.muted for="new-key" { "Key for " (record.name) }
                    input #new-key.select-all type="text" readonly value=(plaintext) spellcheck="false" autocomplete="off";
                    button #copy type="button" data-copy="new-key" data-status="copy-status" { "Copy" }
                }
                p.copy-status #copy-status role="status" aria-live="polite" {}
                dl.facts {
                    dt { "Id" } dd { code #new-key-id { (record.id) } }
                    dt { "Owner" } dd { (record.owner) }
                    dt { "Scopes" } dd { code { (record.scopes) } }
                    dt { "Expires" } dd { (when(record.expires_at)) }
                }
                p { a href=(format!("/console/keys/{}", seg(&record.id))) { "Go to the key's page" } }
            }
        },
    )
}

/// Everything the key page shows.
pub(crate) struct KeyView<'a> {
    pub(crate) key: &'a KeyRecord,
    pub(crate) state: KeyState,
    pub(crate) span: Span,
    pub(crate) usage: Option<Vec<UsagePoint>>,
    pub(crate) events: &'a [AuditEvent],
    pub(crate) flash: Option<&'a str>,
    pub(crate) error: Option<&'a str>,
}

fn link_key(id: &Option<String>) -> Markup {
    match id {
        Some(id) => html! { a href=(format!("/console/keys/{}", seg(id))) { code { (id) } } },
        None => html! { span.muted { "–" } },
    }
}

pub(crate) fn key_page(ctx: &Ctx, v: &KeyView<'_>) -> Markup {
    let k = v.key;
    let (word, class) = status_word(v.state);
    let base = format!("/console/keys/{}", seg(&k.id));
    let range = match v.span {
        Span::Minute => "the last hour, per minute",
        Span::Hour => "the last 48 hours, per hour",
        Span::Day => "the last 30 days, per day",
    };
    layout(
        &k.name,
        Nav::Keys,
        Some(ctx),
        html! {
            p { a href="/console/" { "← All keys" } }
            h1 { (k.name) " " span class=(format!("badge {class}")) #key-status { (word) } }
            @if let Some(m) = v.flash { p.flash.ok role="status" { (m) } }
            @if let Some(e) = v.error { p.flash.bad role="alert" { (e) } }
            div.card {
                dl.facts {
                    dt { "Id" } dd { code { (k.id) } }
                    dt { "Prefix" } dd { code { (k.prefix) "…" } }
                    dt { "Owner" } dd { (k.owner) }
                    dt { "Scopes" } dd { code { (k.scopes) } }
                    dt { "Created" } dd { (when(Some(k.created_at))) }
                    dt { "Expires" } dd { (when(k.expires_at)) }
                    dt { "Last used" } dd { (when(k.last_used_at)) }
                    dt { "Uses left" } dd { @match k.remaining_uses { Some(n) => (n), None => "unlimited" } }
                    dt { "Refill" } dd { @match (&k.refill, k.refill_amount) { (Some(r), Some(a)) => (format!("{a} every {r}")), _ => "none" } }
                    dt { "Rate limit" } dd { @match &k.rate_limit { Some(r) => code { (r) }, None => "the route's" } }
                    dt { "Replaces" } dd { (link_key(&k.rotated_from)) }
                    dt { "Replaced by" } dd { (link_key(&k.rotated_to)) }
                    @if let Some(t) = k.revoked_at { dt { "Revoked" } dd { (when(Some(t))) } }
                }
            }
            h2 #usage { "Decisions" }
            nav aria-label="Time range" {
                @for s in Span::ALL {
                    @let label = match s { Span::Minute => "Last hour", Span::Hour => "Last 48 hours", Span::Day => "Last 30 days" };
                    @if s == v.span { strong aria-current="true" { (label) } " " }
                    @else { a href=(format!("{base}?span={}#usage", s.as_str())) { (label) } " " }
                }
            }
            div.card #usage-chart {
                p.muted { "Valid requests and each kind of refusal, " (range) " (UTC)." }
                @match &v.usage {
                    Some(u) => (chart::outcome_chart(u, v.span)),
                    None => p.muted { "Usage figures are not available (the store did not answer)." },
                }
            }
            @if k.revoked_at.is_none() {
                h2 { "Actions" }
                div.actions {
                    @if k.disabled {
                        form method="post" action=(format!("{base}/enable")) {
                            (csrf_field(ctx))
                            p { "Switch the key back on." }
                            button type="submit" #enable { "Enable" }
                        }
                    } @else {
                        form method="post" action=(format!("{base}/disable")) {
                            (csrf_field(ctx))
                            p { "Refuse the key until it is enabled again." }
                            button.secondary type="submit" #disable { "Disable" }
                        }
                    }
                    @if v.state != KeyState::Expired {
                        form method="post" action=(format!("{base}/rotate")) {
                            (csrf_field(ctx))
                            div.field {
                                label for="grace" { "Rotate: the old key keeps working for" }
                                input #grace type="text" name="grace" value="24h" required aria-describedby="grace-hint";
                                div.muted #grace-hint { "e.g. 24h, 30m, or 0s to end it now. The new key has the same settings." }
                            }
                            button.secondary type="submit" #rotate { "Rotate" }
                        }
                    }
                    form method="post" action=(format!("{base}/revoke")) {
                        (csrf_field(ctx))
                        p { "Revoke: refused from now on, for good." }
                        label.check { input #confirm-revoke type="checkbox" name="confirm" value="yes" required; "I understand this cannot be undone" }
                        button.danger type="submit" #revoke { "Revoke" }
                    }
                }
                h2 #settings { "Settings" }
                form.card method="post" action=(format!("{base}/settings")) {
                    (csrf_field(ctx))
                    (text_field("scopes", "Scopes", &k.scopes, "Space- or comma-separated. The key is refused on routes whose scopes it no longer holds.", false))
                    (text_field("rate_limit", "Rate limit", k.rate_limit.as_deref().unwrap_or(""), "e.g. 100/minute; empty: the route's limit.", false))
                    @let uses = k.remaining_uses.map(|n| n.to_string()).unwrap_or_default();
                    (text_field("uses", "Uses left", &uses, "A number of requests; empty: unlimited. Left as shown, uses spent meanwhile stay spent.", false))
                    input type="hidden" name="uses_was" value=(uses);
                    button.secondary type="submit" #save-settings { "Save settings" }
                }
            }
            h2 { "Recent audit events" }
            (audit_table(v.events))
        },
    )
}

pub(crate) fn audit_table(events: &[AuditEvent]) -> Markup {
    html! {
        @if events.is_empty() {
            p.muted { "None." }
        } @else {
            div.table-wrap {
                table.stack #audit-events {
                    thead { tr { th { "When (UTC)" } th { "Who" } th { "What" } th { "On" } th { "Detail" } } }
                    tbody {
                        @for e in events {
                            tr {
                                td data-label="When" { (rfc3339(e.at)) }
                                td data-label="Who" { code { (e.actor) } }
                                td data-label="What" { (e.action) }
                                td data-label="On" {
                                    @match &e.target {
                                        Some(t) if t.starts_with("key_") => a href=(format!("/console/keys/{}", seg(t))) { code { (t) } },
                                        Some(t) => code { (t) },
                                        None => span.muted { "–" },
                                    }
                                }
                                td data-label="Detail" { code { (e.detail.to_string()) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The audit page's filters, as given.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct AuditFilters {
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: String,
    pub(crate) before: String,
}

pub(crate) fn audit(
    ctx: &Ctx,
    f: &AuditFilters,
    events: &[AuditEvent],
    next: Option<i64>,
    scanned_all: bool,
) -> Markup {
    let next_href = next.map(|before| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("actor", &f.actor)
            .append_pair("action", &f.action)
            .append_pair("target", &f.target)
            .append_pair("before", &before.to_string())
            .finish();
        format!("/console/audit?{q}")
    });
    layout(
        "Audit log",
        Nav::Audit,
        Some(ctx),
        html! {
            h1 { "Audit log" }
            form.filters.card method="get" action="/console/audit" role="search" {
                div { label for="a-actor" { "Who (key id or cli)" } input #a-actor type="text" name="actor" value=(f.actor); }
                div { label for="a-action" { "What (e.g. key.revoke, or key.)" } input #a-action type="text" name="action" value=(f.action); }
                div { label for="a-target" { "On (id or name)" } input #a-target type="text" name="target" value=(f.target); }
                div { button type="submit" { "Filter" } }
            }
            (audit_table(events))
            @if let Some(h) = next_href { p.pager { a href=(h) rel="next" { "Older events" } } }
            @if !scanned_all { p.muted { "Filters look through the newest events in pages; follow “Older events” for more." } }
        },
    )
}

pub(crate) fn users(ctx: &Ctx, users: Option<&[UserRecord]>, flash: Option<&str>) -> Markup {
    layout(
        "Users",
        Nav::Users,
        Some(ctx),
        html! {
            h1 { "Users" }
            @if let Some(m) = flash { p.flash.ok role="status" { (m) } }
            @match users {
                None => p.muted { "Users and clients are not configured on this gateway." },
                Some([]) => p.muted { "No users. Add one with " code { "portcullis users add NAME" } "." },
                Some(list) => div.table-wrap { table.stack #users {
                    thead { tr { th { "Name" } th { "Scopes" } th { "Status" } th { "Created" } th { "Password hash" } th { "Action" } } }
                    tbody { @for u in list { tr {
                        td data-label="Name" { (u.username) }
                        td data-label="Scopes" { code { (u.scopes) } }
                        td data-label="Status" { @if u.disabled { span.badge.s-disabled { "disabled" } } @else { span.badge.s-active { "active" } } }
                        td data-label="Created" { (rfc3339(u.created_at)) }
                        td data-label="Password hash" { (u.hash_algorithm) }
                        td data-label="Action" {
                            form method="post" action=(format!("/console/users/{}/{}", seg(&u.username), if u.disabled { "enable" } else { "disable" })) {
                                (csrf_field(ctx))
                                button.secondary type="submit" { @if u.disabled { "Enable" } @else { "Disable" } }
                            }
                        }
                    } } }
                } },
            }
            p.muted { "Disabling a user ends their sessions and tokens. Add users and set passwords with the CLI or the admin API." }
        },
    )
}

pub(crate) fn clients(ctx: &Ctx, clients: Option<&[ClientRecord]>, flash: Option<&str>) -> Markup {
    layout(
        "OAuth2 clients",
        Nav::Clients,
        Some(ctx),
        html! {
            h1 { "OAuth2 clients" }
            @if let Some(m) = flash { p.flash.ok role="status" { (m) } }
            @match clients {
                None => p.muted { "Users and clients are not configured on this gateway." },
                Some([]) => p.muted { "No clients. Add one with " code { "portcullis clients add NAME" } "." },
                Some(list) => div.table-wrap { table.stack #clients {
                    thead { tr { th { "Client" } th { "Scopes" } th { "Grants" } th { "Created" } th { "Status" } } }
                    tbody { @for c in list { tr {
                        td data-label="Client" { (c.name) br; code.muted { (c.client_id) } }
                        td data-label="Scopes" { code { (c.scopes) } }
                        td data-label="Grants" { (c.grants) }
                        td data-label="Created" { (rfc3339(c.created_at)) }
                        td data-label="Status" {
                            @match c.revoked_at {
                                Some(t) => { span.badge.s-revoked { "revoked" } " " (rfc3339(t)) },
                                None => form method="post" action=(format!("/console/clients/{}/revoke", seg(&c.client_id))) {
                                    (csrf_field(ctx))
                                    span.badge.s-active { "active" } " "
                                    label.check { input type="checkbox" name="confirm" value="yes" required; "final" }
                                    button.danger type="submit" { "Revoke" }
                                },
                            }
                        }
                    } } }
                } },
            }
            p.muted { "Revoking a client ends its refresh tokens; its access tokens stop working too." }
        },
    )
}

/// One line of the health page.
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    pub(crate) summary: String,
    pub(crate) facts: Vec<(&'static str, String)>,
}

pub(crate) fn health(ctx: &Ctx, checks: &[Check]) -> Markup {
    layout(
        "Health",
        Nav::Health,
        Some(ctx),
        html! {
            h1 { "Health" }
            @for c in checks {
                section.card data-check=(c.name) {
                    h2 {
                        (c.name) " "
                        @if c.ok { span.badge.s-active { "ok" } } @else { span.badge.s-revoked { "attention" } }
                    }
                    p { (c.summary) }
                    dl.facts { @for (k, v) in &c.facts { dt { (k) } dd { (v) } } }
                }
            }
        },
    )
}

pub(crate) fn not_found(ctx: Option<&Ctx>) -> Markup {
    layout(
        "Not found",
        Nav::None,
        ctx,
        html! { div.card { h1 { "Not found" } p { "There is no such page (or no such key)." } p { a href="/console/" { "Back to the keys" } } } },
    )
}
