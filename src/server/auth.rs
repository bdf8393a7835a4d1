//! Who is calling: the `Authorization` header becomes an `Identity` (anonymous callers
//! act as contributors, as in the reference's default mode), and each route group is
//! gated on the roles of spec §2.8.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::jwt::{self, JwtError};
use super::reply::ApiError;
use super::App;
use crate::job::time;

/// The roles, least to most privileged (the order decides who may manage whom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Agent,
    Contributor,
    Manager,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Manager, Role::Contributor, Role::Agent];

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Contributor => "contributor",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None` for anonymous callers.
    pub client_id: Option<String>,
    pub role: Role,
    /// The permissions carried by the access token (`{}` when anonymous).
    pub permissions: Map<String, Value>,
}

impl Identity {
    fn anonymous() -> Identity {
        Identity {
            client_id: None,
            role: Role::Contributor,
            permissions: Map::new(),
        }
    }
}

/// Reads the caller from the headers; `Ok(None)` is a header that is not a bearer token
/// (the role check then refuses it, as the reference does).
pub fn authenticate(headers: &HeaderMap, app: &App) -> Result<Option<Identity>, ApiError> {
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
    let identity = Identity {
        client_id: Some(client_id),
        role,
        permissions,
    };
    // Valid until `exp` (plus leeway): a claim or a log post then skips the signature
    // check, which was a quarter of the server's work on those requests.
    let valid_until = claims["exp"].as_f64().unwrap_or(0.0) as i64 + app.config.jwt_leeway;
    app.verified_tokens.insert(token, &identity, valid_until);
    Ok(Some(identity))
}

/// Access tokens already verified, with their identities, until they expire. Bounded:
/// when full it starts over (tokens are re-verified, nothing else is lost).
#[derive(Default)]
pub struct VerifiedTokens {
    tokens: std::sync::Mutex<std::collections::HashMap<String, (Identity, i64)>>,
}

const MAX_VERIFIED_TOKENS: usize = 10_000;

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<Identity> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let (identity, valid_until) = tokens.get(token)?;
        // An expired one falls through to the full check, which gives the right error.
        (time::now() / 1_000_000 < *valid_until).then(|| identity.clone())
    }

    fn insert(&self, token: &str, identity: &Identity, valid_until: i64) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_VERIFIED_TOKENS {
            tokens.clear();
        }
        tokens.insert(token.to_string(), (identity.clone(), valid_until));
    }
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
