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
    Ok(portcullis::service::start_identity(
        store,
        clock(),
        ic.tokens.clone(),
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
    let store = open_store(&cfg).await?;
    let verifier = Verifier::new(store.clone(), clock(), cfg.verifier.clone()).await?;
    verifier.spawn_background();
    let admin_guard = Guard::new(verifier.clone(), cfg.names.clone());
    let identity = identity(&cfg, &store, Some(&verifier)).await?;
    warn_if_cookies_without_tls(&cfg);
    let guard = Guard::new(verifier.clone(), cfg.names.clone()).with_identity(identity.clone());
    let public = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
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
    let app = Arc::new(
        App::new(cfg.clone(), guard.clone(), store.clone())?.with_access_sink(access_sink),
    );
    let admin_router = admin::router(AdminState {
        keys: KeyService::new(store.clone(), clock(), Some(verifier.clone())),
        guard: admin_guard,
        identity: Some(identity.clone()),
        limiter: Some(app.limiter.clone()),
    });
    let cfg = Arc::new(cfg);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tracing::info!(listen = %public.local_addr()?, admin_listen = %admin_l.local_addr()?, tls = cfg.tls.is_some(), routes = cfg.routes.len(), "portcullis listening");
    let a = app.clone();
    let public_task = tokio::spawn(crate::serve::run(
        public,
        cfg.clone(),
        transport,
        move |conn, req| a.clone().handle(conn, req),
        rx.clone(),
    ));
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
    let admin_app = app.clone();
    let admin_task = tokio::spawn(crate::serve::run(
        admin_l,
        cfg.clone(),
        crate::serve::Transport::Plain,
        move |conn, req| {
            // Admin answers carry an X-Request-Id too, from the same
            // sequence as the public listener's.
            let rid = http::HeaderValue::from_str(&admin_app.request_id()).ok();
            admin_answer(admin_router.clone(), rid, conn, req)
        },
        rx,
    ));
    shutdown_signal().await;
    tracing::info!("shutting down: finishing open requests");
    let _ = tx.send(true);
    let _ = public_task.await;
    if let Some(t) = redirect_task {
        let _ = t.await;
    }
    let _ = admin_task.await;
    verifier.flush_last_used().await;
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

/// One admin request: the admin router, behind the same refusal of
/// ambiguous framing as the public listener, answered with `rid` as its
/// `X-Request-Id`.
async fn admin_answer(
    router: axum::Router,
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
