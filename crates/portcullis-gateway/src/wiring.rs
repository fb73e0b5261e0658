//! From a [`Config`] to running parts: the store, the clock and the
//! identity service (for the CLI's commands and `serve` alike), and
//! `portcullis serve` itself: logging, the verifier and guards, the
//! gateway and admin apps, the listeners (TLS, the HTTPS redirect), and a
//! graceful stop on SIGTERM / SIGINT.

use crate::config::{Config, LogFormat};
use crate::gateway::App;
use anyhow::{Context, Result};
use portcullis::admin::{self, AdminState};
use portcullis::auth::guard::Guard;
use portcullis::auth::identity::Identity;
use portcullis::auth::keys::KeyService;
use portcullis::auth::verifier::Verifier;
use portcullis::clock::{SharedClock, SystemClock};
use portcullis::store::Store;
use std::sync::Arc;

/// The store `cfg` names, created and migrated if need be.
pub(crate) async fn open_store(cfg: &Config) -> Result<Store> {
    Store::open_with(&cfg.store_url, true, &cfg.store_options)
        .await
        .with_context(|| {
            format!(
                "cannot open the store {}",
                portcullis::store::redact_url(&cfg.store_url)
            )
        })
}

/// The system clock.
pub(crate) fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// The identity service (users, clients, tokens, sessions) for `cfg`,
/// listening to `verifier`'s change log when one is given (the server;
/// the CLI needs none).
pub(crate) async fn identity(
    cfg: &Config,
    store: &Store,
    verifier: Option<&Arc<Verifier>>,
) -> Result<Arc<Identity>> {
    let ic = &cfg.identity;
    let mut tokens = ic.tokens.clone();
    // The CLI verifies no tokens: it fetches no trusted issuer's keys
    // (a `users add` must not wait on an identity provider).
    if verifier.is_none() {
        tokens.trusted.clear();
    }
    Ok(portcullis::service::start_identity(
        store,
        clock(),
        tokens,
        ic.sessions.clone(),
        ic.throttle.clone(),
        ic.hash_parallelism,
        verifier,
    )
    .await?)
}

/// Installs the log subscriber. Lines are written to stdout in batches by
/// a dedicated thread (see [`crate::logwriter`]), so a request never waits
/// on a write; none is ever dropped. Keep the guard until the end:
/// dropping it writes what is pending.
fn init_logging(cfg: &Config) -> Result<(crate::logwriter::Flusher, crate::logwriter::BatchLog)> {
    // Dependencies stay at info or quieter even when ours are at trace:
    // their trace output can include raw header frames. An operator (or a
    // log-canary test) may raise them with log.dependency_level.
    let filter = match &cfg.dependency_log_level {
        None => format!(
            "{},hyper=info,hyper_util=info,h2=info,sqlx=warn,tower=info",
            cfg.log_level
        ),
        Some(d) => format!(
            "{},hyper={d},hyper_util={d},h2={d},sqlx={d},tower={d},rustls={d}",
            cfg.log_level
        ),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, flusher) = crate::logwriter::batch_log(std::io::stdout())
        .context("cannot start the log writer thread")?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone());
    let _ = match cfg.log_format {
        LogFormat::Json => b
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => b.try_init(),
    };
    Ok((flusher, writer))
}

/// `portcullis serve`: runs until SIGTERM or SIGINT, then lets open
/// requests finish.
pub(crate) async fn serve(cfg: Config) -> Result<()> {
    let (_log_flusher, log_sink) = init_logging(&cfg)?;
    // JSON access-log lines skip the subscriber's formatter (same shape).
    let access_sink = matches!(cfg.log_format, LogFormat::Json).then_some(log_sink);
    // Before the verifier, the limiter and the app: they take their
    // metric handles from the recorder installed now.
    let prom = if cfg.metrics.enabled {
        Some(crate::metrics::install(&cfg.metrics)?)
    } else {
        None
    };
    let store = open_store(&cfg).await?;
    let verifier = Verifier::new(store.clone(), clock(), cfg.verifier.clone()).await?;
    verifier.spawn_background();
    let admin_guard = Guard::new(verifier.clone(), cfg.names.clone());
    let identity = identity(&cfg, &store, Some(&verifier)).await?;
    warn_if_cookies_without_tls(&cfg);
    let guard = Guard::new(verifier.clone(), cfg.names.clone()).with_identity(identity.clone());
    // One socket per event loop, all on the public address.
    let public = crate::engine::bind(cfg.listen, cfg.threads)?;
    let public_addr = public
        .first()
        .map(|l| l.local_addr())
        .transpose()?
        .unwrap_or(cfg.listen);
    let admin_l = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", cfg.admin_listen))?;
    let transport = public_transport(&cfg)?;
    let redirect_l = match cfg.tls.as_ref().and_then(|t| t.redirect_http_from) {
        None => None,
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (tls.redirect_http_from)"))?,
        ),
    };
    let mut app =
        App::new(cfg.clone(), guard.clone(), store.clone())?.with_access_sink(access_sink);
    if prom.is_some() {
        app = app.with_metrics(
            Arc::new(crate::metrics::RequestMetrics::new(&cfg.routes)),
            Arc::new(crate::metrics::RequestMetrics::admission(&cfg.routes)),
        );
    }
    // Per-key analytics: counted in memory, written every flush interval.
    let analytics = cfg.analytics.clone().map(|c| {
        let a = portcullis::analytics::Analytics::new(store.clone(), clock(), c);
        a.spawn();
        a
    });
    if let Some(a) = &analytics {
        app = app.observed_by(a.clone());
    }
    let app = Arc::new(app);
    let scrape = prom.map(|h| {
        crate::metrics::spawn_upkeep(h.clone());
        crate::metrics::Scrape::new(
            h,
            admin_guard.clone(),
            Some(verifier.clone()),
            app.limiter.clone(),
        )
        .with_analytics(analytics.clone())
    });
    let metrics_l = match cfg.metrics.listen {
        None => None,
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (metrics.listen)"))?,
        ),
    };
    let admin_state = AdminState {
        keys: KeyService::new(store.clone(), clock(), Some(verifier.clone())),
        guard: admin_guard,
        identity: Some(identity.clone()),
        limiter: Some(app.limiter.clone()),
    };
    let mut admin_router = admin::router(admin_state.clone());
    if cfg.console.enabled {
        // The console (/console/) beside the admin API: its own sign-in
        // and session, the same services behind it.
        let mut options = cfg.console.options.clone();
        options.analytics = analytics.clone();
        let console = portcullis::console::router(admin_state, options)
            .await
            .context("cannot start the admin console")?;
        admin_router = admin_router.merge(console);
    }
    let cfg = Arc::new(cfg);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tracing::info!(listen = %public_addr, admin_listen = %admin_l.local_addr()?, tls = cfg.tls.is_some(), routes = cfg.routes.len(), threads = cfg.threads, "portcullis listening");
    let a = app.clone();
    let mut public_loops = crate::engine::spawn(
        public,
        app.address_block(),
        cfg.clone(),
        transport,
        move |conn, req| a.clone().handle(conn, req),
        rx.clone(),
    )?;
    let redirect_task = redirect_l.map(|l| {
        let a = app.clone();
        tokio::spawn(crate::serve::run(
            l,
            cfg.clone(),
            crate::serve::Transport::Plain,
            move |conn, req| a.clone().handle(conn, req),
            rx.clone(),
        ))
    });
    let metrics_task = match (metrics_l, &scrape) {
        (Some(l), Some(s)) => {
            let s = if cfg.metrics.require_key {
                s.clone()
            } else {
                s.clone().without_key()
            };
            Some(tokio::spawn(crate::serve::run(
                l,
                cfg.clone(),
                crate::serve::Transport::Plain,
                move |conn, req| metrics_answer(s.clone(), conn, req),
                rx.clone(),
            )))
        }
        _ => None,
    };
    let admin_app = app.clone();
    let admin_task = tokio::spawn(crate::serve::run(
        admin_l,
        cfg.clone(),
        crate::serve::Transport::Plain,
        move |conn, req| {
            // Admin answers carry an X-Request-Id too, from the same
            // sequence as the public listener's.
            let rid = Some(admin_app.request_id());
            let scrape = scrape
                .as_ref()
                .filter(|_| req.uri().path() == "/metrics")
                .cloned();
            admin_answer(admin_router.clone(), scrape, rid, conn, req)
        },
        rx,
    ));
    tokio::select! {
        () = shutdown_signal() => {}
        () = public_loops.ended_early() => {
            tracing::error!("an event loop of the public listener stopped: shutting down");
        }
    }
    tracing::info!("shutting down: finishing open requests");
    let _ = tx.send(true);
    public_loops.join().await;
    if let Some(t) = redirect_task {
        let _ = t.await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = admin_task.await;
    verifier.flush_last_used().await;
    if let Some(a) = &analytics {
        // The last counts: failures are logged (with what is dropped).
        let _ = a.flush().await;
    }
    public_loops.release();
    tracing::info!("stopped");
    Ok(())
}

/// Session and cookie keys are set `Secure` with the `__Host-` prefix:
/// over plain HTTP only browsers on localhost keep them.
fn warn_if_cookies_without_tls(cfg: &Config) {
    if cfg.tls.is_none()
        && cfg.routes.iter().any(|r| {
            r.policy.schemes.schemes().iter().any(|s| {
                matches!(
                    s,
                    portcullis_core::Scheme::Session | portcullis_core::Scheme::ApiKeyCookie
                )
            })
        })
    {
        tracing::warn!(
            "cookies are set with the Secure attribute and the __Host- prefix, but this listener speaks plain HTTP: browsers keep such cookies only on localhost. Put Portcullis behind TLS for anything else"
        );
    }
}

/// How the public listener speaks: plain HTTP, or TLS with a certificate
/// that SIGHUP reloads.
fn public_transport(cfg: &Config) -> Result<crate::serve::Transport> {
    Ok(match &cfg.tls {
        None => {
            crate::tls::handle_sighup(None);
            crate::serve::Transport::Plain
        }
        Some(t) => {
            let certs = crate::tls::Reloadable::new(t.cert.clone(), t.key.clone())
                .context("tls: cannot load the certificate")?;
            crate::tls::handle_sighup(Some(certs.clone()));
            crate::serve::Transport::Tls(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(certs)?,
            ))
        }
    })
}

/// One request on `metrics.listen`: `GET /metrics`, behind the same
/// refusal of ambiguous framing as the other listeners.
async fn metrics_answer(
    scrape: crate::metrics::Scrape,
    conn: crate::serve::Conn,
    req: http::Request<axum::body::Body>,
) -> http::Response<axum::body::Body> {
    if let Some(a) = conn.ambiguity() {
        let p = portcullis_core::Problem::new(portcullis_core::ErrorCode::AmbiguousFraming)
            .log_reason(a.log_reason());
        let mut resp = portcullis::rejection::problem_response(&p, None);
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return resp;
    }
    scrape.answer(req).await
}

/// One admin request: the admin router (or `GET /metrics`, when `scrape`
/// is given), behind the same refusal of ambiguous framing as the public
/// listener, answered with `rid` as its `X-Request-Id`.
async fn admin_answer(
    router: axum::Router,
    scrape: Option<crate::metrics::Scrape>,
    rid: Option<http::HeaderValue>,
    conn: crate::serve::Conn,
    req: http::Request<axum::body::Body>,
) -> http::Response<axum::body::Body> {
    use tower::ServiceExt;
    let mut resp = if let Some(a) = conn.ambiguity() {
        let p = portcullis_core::Problem::new(portcullis_core::ErrorCode::AmbiguousFraming)
            .log_reason(a.log_reason());
        let mut resp = portcullis::rejection::problem_response(&p, None);
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        resp
    } else if let Some(s) = scrape {
        s.answer(req).await
    } else {
        match router.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    };
    if let Some(v) = rid {
        resp.headers_mut().insert(crate::proxy::REQUEST_ID, v);
    }
    resp
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
