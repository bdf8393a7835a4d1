//! `tf serve`: the lab server. Routes live in `routes`, behind the role `gate`; handlers
//! by resource in the other files, all sharing `app`'s `App`; they reach storage only
//! through `Store`'s domain operations. This file starts the server; nothing in here
//! uses it.

pub mod admin;
mod agents;
mod app;
mod auth;
pub mod backup;
mod clients;
pub mod config;
mod connections;
mod counters;
mod csrf;
mod extract;
mod gate;
mod health;
mod http;
mod jobs;
mod json_limits;
pub(crate) mod jwt;
mod keys;
mod legacy;
mod log_batches;
mod logins;
mod metrics;
pub mod migrate;
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
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{
    HeaderName, HeaderValue, CONTENT_SECURITY_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::job::time;
use crate::store::health::IfLost;
use crate::store::{DatabaseChoice, SecretsKey, ServerDataDir};
use app::App;
use auth::VerifiedTokens;
use config::Config;
use counters::ServerMetrics;
use logins::Bcrypt;

/// The header that gives a client its request's number.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How often the expiry pass runs at most.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(600);

pub async fn serve(config: Config) -> anyhow::Result<()> {
    let if_lost = if config.start_afresh {
        IfLost::StartAfresh
    } else {
        IfLost::Refuse
    };
    // What can fail without touching the disk comes first: a server that cannot start
    // (a port in use, a bad certificate) leaves no data dir, keys or database behind.
    let tls = config
        .tls
        .as_ref()
        .map(|(cert, key)| tls::acceptor(cert, key))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    // Before the keys: on a data dir whose database was lost, none may be created.
    let data_dir = ServerDataDir::claim(&config.data_dir, &config.database, if_lost)?;
    let (jwt_key, secrets_key) = load_keys(&config)?;
    let store = data_dir
        .open(config.database.clone(), Some(SecretsKey::new(&secrets_key)))
        .await?;
    let address = listener.local_addr()?;
    let limits = connection_limits(&config);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "tf serve listening on {scheme}://{address}, data in {}{}",
        config.data_dir.display(),
        match &config.database {
            DatabaseChoice::Sqlite(_) => String::new(),
            DatabaseChoice::Postgres(database) => format!(", records in {}", database.describe()),
        }
    );
    let app = Arc::new(App {
        store,
        config,
        jwt_key,
        bcrypt: Bcrypt::default(),
        verified_tokens: VerifiedTokens::default(),
        http: app::http_client(),
        metrics: ServerMetrics::default(),
    });
    let expiry = tokio::spawn(expire_forever(app.clone()));
    let router = routes::api(&app)
        .route("/metrics", axum::routing::get(metrics::scrape))
        .route("/healthz", axum::routing::get(health::check))
        .merge(web::routes())
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(app.clone(), every_request));
    let router = router.with_state(app.clone());
    let closing = app.clone();
    let shutdown = async move {
        shutdown_signal().await;
        closing.store.end_long_polls();
    };
    http::serve(listener, tls, router, limits, shutdown).await;
    expiry.abort();
    let _ = expiry.await;
    // The last handle closes the store: the writer commits what it has and stops.
    drop(Arc::into_inner(app));
    tracing::info!("tf serve stopped");
    Ok(())
}

/// The cap on connections follows the open-file limit, raised as far as it goes.
fn connection_limits(config: &Config) -> http::Limits {
    let open_files = connections::raise_open_file_limit();
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| connections::default_cap(open_files));
    tracing::info!(
        "up to {max_connections} connections (open-file limit {open_files}), header timeout {}",
        humantime::format_duration(config.header_timeout)
    );
    http::Limits {
        max_connections,
        header_timeout: config.header_timeout,
    }
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

/// What every request goes through (one layer, as each layer costs every request):
/// it is numbered (what is logged while it runs carries `request{id=N}`, the client gets
/// the same number in `x-request-id`, and at debug level one line per request says what
/// it was and how it ended); a browser's write for another site is refused (`csrf`);
/// every answer gets the browser safety headers; and its time is counted for `/metrics`.
async fn every_request(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::Instrument;
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let started = Instant::now();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("request", id);
    async move {
        // Only a debug log needs the request line after the request is handed on.
        let request_line = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| format!("{} {}", request.method(), request.uri().path()));
        let method = metrics::method_label(request.method());
        // The route pattern stays in the router's `MatchedPath`, shared, not copied.
        let route = request.extensions().get::<MatchedPath>().cloned();
        let mut response = match csrf::forged_write_refusal(&request) {
            Some(refusal) => refusal.into_response(),
            None => next.run(request).await,
        };
        if let Some(request_line) = request_line {
            tracing::debug!("{request_line} -> {}", response.status().as_u16());
        }
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID, id.into());
        // Job names and logs are anyone's text: browsers must never sniff an answer into
        // HTML, run scripts from elsewhere, or show the pages inside another site.
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
        );
        app.metrics.request_took(
            method,
            metrics::route_label(route.as_ref()),
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
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
