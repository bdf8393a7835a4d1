//! The gate of each route group: the `Authorization` header becomes the caller's
//! `Identity`, and a caller whose role the group does not allow is refused.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::app::App;
use super::auth::{Identity, Role};
use super::jwt::{self, JwtError};
use super::reply::ApiError;
use crate::job::time;

/// Reads the caller from the headers; `Ok(None)` is a header that is not a bearer token
/// (the role check then refuses it, as the reference does).
fn authenticate(headers: &HeaderMap, app: &App) -> Result<Option<Arc<Identity>>, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or("?"))
        .unwrap_or_default();
    if header.is_empty() {
        return Ok(Some(Identity::anonymous()));
    }
    // HTTP trims trailing blanks, so an empty token arrives as a bare "Bearer".
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or((header == "Bearer").then_some(""))
    else {
        return Ok(None);
    };
    if token.is_empty() {
        return Err(ApiError::json(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if let Some(identity) = app.verified_tokens.get(token) {
        return Ok(Some(identity));
    }
    let now = time::now() / 1_000_000;
    let claims =
        jwt::verify(token, &app.jwt_key, app.config.jwt_leeway, now).map_err(
            |error| match error {
                JwtError::Expired => ApiError::json(StatusCode::UNAUTHORIZED, "Token has expired"),
                JwtError::Immature => {
                    ApiError::json(StatusCode::UNAUTHORIZED, "Token not yet valid")
                }
                JwtError::BadSignature => {
                    ApiError::json(StatusCode::FORBIDDEN, "Invalid Token signature")
                }
                JwtError::MissingClaim(claim) => ApiError::json(
                    StatusCode::FORBIDDEN,
                    format!("Token missing required claim: {claim}"),
                ),
                JwtError::Undecodable => {
                    ApiError::json(StatusCode::FORBIDDEN, "Unable to decode token")
                }
                JwtError::Invalid => ApiError::json(StatusCode::FORBIDDEN, "Invalid Token"),
            },
        )?;
    let permissions = match claims.get("permissions") {
        Some(Value::Object(permissions)) => permissions.clone(),
        _ => Map::new(),
    };
    let invalid = || ApiError::json(StatusCode::FORBIDDEN, "Invalid Token");
    let client_id = permissions
        .get("client_id")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?
        .to_string();
    let role = match permissions.get("role") {
        None => Role::Contributor,
        Some(role) => role.as_str().and_then(Role::parse).ok_or_else(invalid)?,
    };
    let identity = Arc::new(Identity {
        client_id: Some(client_id),
        role,
        permissions,
    });
    // Valid until `exp` (plus leeway): a claim or a log post then skips the signature
    // check, which was a quarter of the server's work on those requests.
    let valid_until = claims["exp"].as_f64().unwrap_or(0.0) as i64 + app.config.jwt_leeway;
    app.verified_tokens.insert(token, &identity, valid_until);
    Ok(Some(identity))
}

/// The gate of a route group: refuses callers whose role is not in `allowed` (listed in
/// the refusal in the order given), and hands the identity to the handler.
pub async fn require(
    State(app): State<Arc<App>>,
    allowed: &'static [Role],
    mut request: Request,
    next: Next,
) -> Response {
    let identity = match authenticate(request.headers(), &app) {
        Ok(identity) => identity,
        Err(error) => return error.into_response(),
    };
    let tokenless_agent =
        |identity: &Identity| app.config.tokenless_agents && identity.client_id.is_none();
    match identity {
        Some(identity)
            if allowed.contains(&identity.role)
                || (allowed.contains(&Role::Agent) && tokenless_agent(&identity)) =>
        {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        _ => {
            let roles: Vec<&str> = allowed.iter().map(|role| role.as_str()).collect();
            ApiError::json(
                StatusCode::FORBIDDEN,
                format!("Specified action requires role: {}", roles.join(", ")),
            )
            .into_response()
        }
    }
}
