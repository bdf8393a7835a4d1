//! `/v1/oauth2/*`: client credentials → access token (HS256 JWT, 10 minutes) + refresh
//! token (opaque, 6 days, revocable; both lifetimes are settings). Secrets are checked
//! against bcrypt hashes; refresh tokens are stored only as SHA-256 hashes. Repeated
//! failed logins for one client id lock it out for a while, so its secret cannot be
//! guessed at speed. A refresh with `?renew=true` (tf's addition, which `tf agent` uses)
//! also hands out a new refresh token once the old one is half way through its life, so
//! an agent that runs keeps working.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::Identity;
use super::extract::{JsonBody, QueryPairs};
use super::http::PeerAddress;
use super::reply::{self, ApiError, ApiResult};
use super::App;
use super::{jwt, keys};
use crate::job::time;
use crate::store::{Client, Renewal, Revocation, Store};

/// The reference's token lifetimes, the defaults of the settings.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(6 * 86_400);
/// The reference's bcrypt cost for client secrets.
pub const BCRYPT_COST: u32 = 8;
const FAILURES_BEFORE_LOCKOUT: u32 = 5;
const LOCKOUT: Duration = Duration::from_secs(60);
/// The most (client id, address) pairs remembered; past it, pairs that are not locked
/// out are forgotten first.
const MAX_TRACKED_LOGINS: usize = 100_000;

/// Who is trying to log in as whom: a lock-out holds the address that guessed, not the
/// client id everywhere, so a stranger cannot lock a real client out.
type LoginSource = (String, IpAddr);

/// Failed login attempts per (client id, address), known ids and unknown ones alike, so
/// that the answers do not tell which ids exist.
#[derive(Default)]
pub struct LoginGuard {
    attempts: Mutex<HashMap<LoginSource, LoginRecord>>,
}

#[derive(Default)]
struct LoginRecord {
    failures: u32,
    locked_until: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl LoginGuard {
    /// Counts an attempt before its secret is checked, so parallel guesses count too;
    /// `Err` is how long the source stays locked.
    fn attempt(&self, client_id: &str, address: IpAddr) -> Result<(), Duration> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if attempts.len() >= MAX_TRACKED_LOGINS {
            forget_the_unlocked(&mut attempts, now);
        }
        let record = attempts
            .entry((client_id.to_string(), address))
            .or_default();
        match record.locked_until {
            Some(until) if until > now => return Err(until - now),
            Some(_) => *record = LoginRecord::default(),
            None => {}
        }
        record.failures += 1;
        record.last_attempt = Some(now);
        if record.failures > FAILURES_BEFORE_LOCKOUT {
            record.failures = 0;
            record.locked_until = Some(now + LOCKOUT);
            return Err(LOCKOUT);
        }
        Ok(())
    }

    fn succeeded(&self, client_id: &str, address: IpAddr) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(client_id.to_string(), address));
    }
}

/// Makes room: first the sources idle for a lock-out's length, then every one not
/// locked out (locks are what must not be lost).
fn forget_the_unlocked(attempts: &mut HashMap<LoginSource, LoginRecord>, now: Instant) {
    let locked = |record: &LoginRecord| record.locked_until.is_some_and(|until| until > now);
    attempts.retain(|_, record| {
        locked(record) || record.last_attempt.is_some_and(|at| now - at < LOCKOUT)
    });
    if attempts.len() >= MAX_TRACKED_LOGINS {
        attempts.retain(|_, record| locked(record));
    }
}

/// bcrypt, slow on purpose, runs off the async workers and at most one per core at a
/// time: a flood of logins waits its turn instead of taking every thread.
pub struct Bcrypt {
    slots: tokio::sync::Semaphore,
}

impl Default for Bcrypt {
    fn default() -> Bcrypt {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Bcrypt {
            slots: tokio::sync::Semaphore::new(cores),
        }
    }
}

impl Bcrypt {
    /// Whether `secret` matches `hash`; a missing hash is checked against a dummy one, so
    /// unknown clients cost as much as known ones.
    pub async fn verify(&self, secret: String, hash: Option<String>) -> bool {
        self.run(move || {
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
            bcrypt::verify(secret, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// The hash of a new secret, at the reference's cost.
    pub async fn hash(&self, secret: String) -> Result<String, ApiError> {
        self.run(move || bcrypt::hash(secret, BCRYPT_COST).ok())
            .await
            .flatten()
            .ok_or_else(|| {
                ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, "Cannot hash the secret")
            })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let _slot = self.slots.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }
}

/// A signed access token carrying `client`'s permissions.
pub fn access_token(app: &App, client: &Client) -> String {
    let now = time::now() / 1_000_000;
    let claims = json!({
        "exp": now + access_token_seconds(app),
        "iat": now,
        "sub": "access_token",
        "permissions": client.permissions(),
    });
    jwt::sign(&claims, &app.jwt_key)
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn access_token_seconds(app: &App) -> i64 {
    app.config.access_token_lifetime.as_secs() as i64
}

/// The answer to a login or refresh: a fresh access token, and a refresh token if given.
fn tokens_reply(app: &App, client: &Client, refresh_token: Option<String>) -> Value {
    let mut reply = json!({
        "access_token": access_token(app, client),
        "token_type": "Bearer",
        "expires_in": access_token_seconds(app),
    });
    if let Some(token) = refresh_token {
        reply["refresh_token"] = Value::String(token);
    }
    reply
}

/// A new random refresh token (48 alphanumerics, as the reference's).
pub fn new_refresh_token() -> anyhow::Result<String> {
    keys::random_alphanumeric(48).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))
}

/// Issues a refresh token for `client_id`, valid for `lifetime`, and stores its hash;
/// `None` when the client is gone, or no longer has `secret_hash` (when given).
pub async fn issue_refresh_token(
    store: &Store,
    client_id: &str,
    lifetime: Duration,
    secret_hash: Option<String>,
) -> anyhow::Result<Option<String>> {
    let token = new_refresh_token()?;
    let stored = store
        .store_refresh_token(token_hash(&token), client_id, lifetime, secret_hash)
        .await?;
    Ok(stored.then_some(token))
}

fn cannot_issue(error: impl std::fmt::Display) -> ApiError {
    tracing::error!("cannot issue a refresh token: {error:#}");
    ApiError::json(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Cannot issue a refresh token",
    )
}

/// The token `token` is renewed to: derived from it with the signing key, so asking
/// again (a holder that lost the answer, or could not save it) gives the same one, and
/// only the server can work it out.
fn successor_of(token: &str, key: &[u8]) -> String {
    let input = format!("refresh token successor:{token}");
    keys::derived_alphanumeric(key, input.as_bytes(), 48)
}

/// Client id and secret from an HTTP Basic header.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::text(
            StatusCode::UNAUTHORIZED,
            "No authorization header specified",
        ));
    };
    let malformed = || {
        ApiError::text(
            StatusCode::UNAUTHORIZED,
            "Client id and key must be specified in authorization header",
        )
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(malformed)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(malformed)?;
    match decoded.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok((id.to_string(), secret.to_string()))
        }
        _ => Err(malformed()),
    }
}

/// `POST /v1/oauth2/token` with HTTP Basic client credentials.
pub async fn token(
    State(app): State<Arc<App>>,
    Extension(PeerAddress(address)): Extension<PeerAddress>,
    headers: HeaderMap,
) -> ApiResult {
    let (client_id, secret) = basic_credentials(&headers)?;
    let invalid = || ApiError::text(StatusCode::UNAUTHORIZED, "Invalid client id or client key");
    app.logins.attempt(&client_id, address).map_err(|wait| {
        ApiError::text(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed logins for {client_id}; try again in {} s",
                wait.as_secs() + 1
            ),
        )
    })?;
    let stored = app.store.client(&client_id).await?;
    let hash = stored.as_ref().and_then(|(_, hash)| hash.clone());
    let verified = app.bcrypt.verify(secret, hash.clone()).await;
    let client = match stored {
        Some((client, Some(_))) if verified => client,
        _ => {
            let shown: String = client_id.chars().take(64).collect();
            tracing::info!("failed login for client {:?}", shown);
            return Err(invalid());
        }
    };
    app.logins.succeeded(&client_id, address);
    // Stored only if the secret just checked is still the client's.
    let refresh_token = issue_refresh_token(
        &app.store,
        &client.client_id,
        app.config.refresh_token_lifetime,
        hash,
    )
    .await
    .map_err(cannot_issue)?
    .ok_or_else(invalid)?;
    Ok(reply::json(&tokens_reply(
        &app,
        &client,
        Some(refresh_token),
    )))
}

/// A bcrypt hash to check against for unknown clients, so that both answers take as long.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| bcrypt::hash("no such client", BCRYPT_COST).unwrap_or_default());

/// The `refresh_token` of a refresh or revoke body, validated like the reference.
fn refresh_token_field(body: &Value) -> Result<String, ApiError> {
    let error = |message: &str| ApiError::invalid_body(json!({"refresh_token": [message]}));
    match body.get("refresh_token") {
        None => Err(error("Missing data for required field.")),
        Some(Value::String(token)) if token.is_empty() => {
            Err(error("Shorter than minimum length 1."))
        }
        Some(Value::String(token)) => Ok(token.clone()),
        Some(_) => Err(error("Not a valid string.")),
    }
}

/// `POST /v1/oauth2/refresh[?renew=true]`: a new access token with the client's current
/// permissions; with `renew`, also a new refresh token once the old one is past half its
/// life. A token is renewed once, to the same successor however often it is asked; the
/// old one is not revoked: it still ends when it was due to, and whoever failed to save
/// the new one can go on until then. The answers, refusals included, carry the
/// extensions header, so `tf agent` knows which hint to give.
pub async fn refresh(
    State(app): State<Arc<App>>,
    query: QueryPairs,
    JsonBody(body): JsonBody,
) -> axum::response::Response {
    let renew = query.last("renew") == Some("true");
    let mut response = match refresh_tokens(&app, &body, renew).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.headers_mut().insert(
        crate::api::EXTENSIONS_HEADER,
        axum::http::HeaderValue::from_static(crate::api::EXTENSIONS),
    );
    response
}

async fn refresh_tokens(app: &App, body: &Value, renew: bool) -> ApiResult {
    let token = refresh_token_field(body)?;
    let invalid = || ApiError::json(StatusCode::BAD_REQUEST, "Invalid refresh token.");
    let record = app
        .store
        .use_refresh_token(token_hash(&token))
        .await?
        .ok_or_else(invalid)?;
    if record.revoked {
        return Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "Refresh token revoked.",
        ));
    }
    if record.expires_at < time::now() {
        return Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "Refresh token expired",
        ));
    }
    let (client, _) = app
        .store
        .client(&record.client_id)
        .await?
        .ok_or_else(invalid)?;
    let half_life = record.issued_at + (record.expires_at - record.issued_at) / 2;
    let renewal = if renew && time::now() >= half_life {
        renewal(app, &token).await?
    } else {
        None
    };
    Ok(reply::json(&tokens_reply(app, &client, renewal)))
}

/// The successor of `token`, stored if it is not yet; `None` when the token can no
/// longer be renewed (its holder goes on with it until it expires).
async fn renewal(app: &App, token: &str) -> Result<Option<String>, ApiError> {
    let successor = successor_of(token, &app.jwt_key);
    let outcome = app
        .store
        .renew_refresh_token(
            token_hash(token),
            token_hash(&successor),
            app.config.refresh_token_lifetime,
        )
        .await?;
    Ok(match outcome {
        Renewal::Renewed => Some(successor),
        Renewal::RenewedElsewhere => {
            tracing::warn!(
                "a refresh token renewed under another signing key asked again; its holder \
                 keeps the old one until it expires"
            );
            None
        }
        Renewal::Invalid => None,
    })
}

/// `POST /v1/oauth2/revoke` (admin).
pub async fn revoke(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Identity>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let token = refresh_token_field(&body)?;
    match app.store.revoke_refresh_token(token_hash(&token)).await? {
        Revocation::Unknown => Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "Refresh token not found",
        )),
        Revocation::AlreadyRevoked => Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "Refresh token has already been revoked",
        )),
        Revocation::Revoked => {
            tracing::info!(
                "refresh token revoked by {}",
                identity.client_id.unwrap_or_default()
            );
            Ok(reply::json(&json!({"status": "OK"})))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_48_alphanumerics_and_differ() {
        let (a, b) = (new_refresh_token().unwrap(), new_refresh_token().unwrap());
        assert_eq!(a.len(), 48);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
