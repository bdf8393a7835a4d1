//! `/v1/oauth2/*`: client credentials → access token (HS256 JWT, 10 minutes) + refresh
//! token (opaque, 6 days, revocable; both lifetimes are settings). Secrets are checked
//! against bcrypt hashes; refresh tokens are stored only as SHA-256 hashes. Repeated
//! failed logins for one client id lock it out for a while, so its secret cannot be
//! guessed at speed. A refresh with `?renew=true` (tf's addition, which `tf agent` uses)
//! also hands out a new refresh token once the old one is half way through its life, so
//! an agent that runs keeps working.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::app::App;
use super::auth::Identity;
use super::extract::{JsonBody, QueryPairs};
use super::http::PeerAddress;
use super::reply::{self, ApiError, ApiResult};
use super::{jwt, keys};
use crate::job::time;
use crate::store::{Client, Renewal, Revocation, Store};

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
    if let Some(wait) = app.store.count_login_attempt(&client_id, address).await? {
        return Err(ApiError::text(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Too many failed logins for {client_id}; try again in {} s",
                wait.as_secs() + 1
            ),
        ));
    }
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
    app.store.forget_login_failures(&client_id, address).await?;
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
    Extension(identity): Extension<Arc<Identity>>,
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
                identity.client_id.clone().unwrap_or_default()
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
