//! `tf serve`: the lab server. Routes live in `routes`, handlers by resource in the
//! other files; they reach storage only through `Store`'s domain operations.

pub mod admin;
mod agents;
mod auth;
pub mod backup;
mod clients;
pub mod config;
mod extract;
mod http;
mod jobs;
pub(crate) mod jwt;
mod keys;
mod legacy;
mod metrics;
mod permissions;
pub mod queues;
mod reply;
mod results;
mod routes;
mod secrets;
mod tls;
mod tokens;
mod web;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use std::os::unix::fs::DirBuilderExt;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::serve::ListenerExt;

use crate::job::time;
use crate::store::{SecretsKey, Store};
use config::Config;

/// What every handler shares.
pub struct App {
    pub store: Store,
    pub config: Config,
    /// Signs and checks access tokens.
    pub jwt_key: Vec<u8>,
    pub logins: tokens::LoginGuard,
    pub verified_tokens: auth::VerifiedTokens,
    pub http: webhook::HttpClient,
    pub metrics: metrics::ServerMetrics,
}

/// How often the expiry pass runs at most.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(600);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Private: the database holds secret hashes and sits next to the key files.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let (jwt_key, secrets_key) = load_keys(&config)?;
    let tls = config
        .tls
        .as_ref()
        .map(|(cert, key)| tls::acceptor(cert, key))
        .transpose()?;
    let store = Store::open(
        &config.data_dir,
        config.sync,
        Some(SecretsKey::new(&secrets_key)),
    )?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "tf serve listening on {scheme}://{address}, data in {}",
        config.data_dir.display()
    );
    let app = Arc::new(App {
        store,
        config,
        jwt_key,
        logins: tokens::LoginGuard::default(),
        verified_tokens: auth::VerifiedTokens::default(),
        http: webhook::http_client(),
        metrics: metrics::ServerMetrics::default(),
    });
    let expiry = tokio::spawn(expire_forever(app.clone()));
    let mut router = routes::api(&app)
        .route("/metrics", axum::routing::get(metrics::scrape))
        .merge(web::routes())
        .layer(middleware::from_fn_with_state(
            app.clone(),
            metrics::time_request,
        ))
        .layer(DefaultBodyLimit::disable());
    // The log level is fixed at start-up: without debug logging, requests skip the layer.
    router = router.layer(middleware::from_fn(trace_request));
    let router = router.with_state(app.clone());
    let closing = app.clone();
    let shutdown = async move {
        shutdown_signal().await;
        closing.store.end_long_polls();
    };
    match tls {
        Some(acceptor) => {
            http::serve(tls::TlsListener::new(listener, acceptor)?, router, shutdown).await
        }
        None => {
            // Small answers go out at once instead of waiting for Nagle's timer.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            http::serve(listener, router, shutdown).await
        }
    }
    expiry.abort();
    let _ = expiry.await;
    // The last handle closes the store: the writer commits what it has and stops.
    drop(Arc::into_inner(app));
    tracing::info!("tf serve stopped");
    Ok(())
}

/// The JWT signing key and the secrets master key.
fn load_keys(config: &Config) -> anyhow::Result<(Vec<u8>, [u8; 32])> {
    let jwt = match &config.jwt_key {
        Some(key) if key.len() < 16 => {
            anyhow::bail!("JWT_SIGNING_KEY is too short to sign tokens safely")
        }
        Some(key) => key.as_bytes().to_vec(),
        None => keys::load_or_create(&config.jwt_key_file, 32)?,
    };
    let secrets = keys::load_or_create(&config.secrets_key_file, 32)?;
    Ok((
        jwt,
        keys::thirty_two_bytes(&secrets, &config.secrets_key_file)?,
    ))
}

/// Numbers each request: what is logged while it runs carries `request{id=N}`, the
/// client gets the same number in `x-request-id`, and at debug level one line per request
/// says what it was and how it ended. Every answer also gets the browser safety headers.
async fn trace_request(request: Request, next: Next) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::Instrument;
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("request", id);
    async move {
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        let mut response = next.run(request).await;
        tracing::debug!("{method} {path} -> {}", response.status().as_u16());
        let headers = response.headers_mut();
        headers.insert("x-request-id", id.into());
        // Job names and logs are anyone's text: browsers must never sniff an answer into
        // HTML, run scripts from elsewhere, or show the pages inside another site.
        headers.insert(
            "x-content-type-options",
            axum::http::HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            "content-security-policy",
            axum::http::HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
        );
        response
    }
    .instrument(span)
    .await
}

async fn expire_forever(app: Arc<App>) {
    // A short retention (tests, demos) is enforced at a tenth of its length.
    let interval = EXPIRY_INTERVAL
        .min(app.config.retention / 10)
        .max(Duration::from_millis(100));
    let retention = i64::try_from(app.config.retention.as_micros()).unwrap_or(i64::MAX);
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let cutoff = time::now().saturating_sub(retention);
        match app.store.expire(cutoff).await {
            Ok(expired) => tracing::debug!("expiry pass: {expired:?}"),
            Err(error) => tracing::warn!("expiry pass failed: {error}"),
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
