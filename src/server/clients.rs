//! `/v1/client-permissions` and `/v1/restricted-queues`: managing API clients and who
//! may submit to which restricted queue.

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::app::App;
use super::auth::{Identity, Role};
use super::extract::JsonBody;
use super::reply::{self, ApiError, ApiResult};
use crate::job::names::NameKind;
use crate::job::validate::{validate_body, BodySchema};
use crate::store::{Client, RefreshTokens};

/// The system admin the charm creates; never changed through the API.
const SYSTEM_ADMIN: &str = "testflinger-admin";

fn unknown_client() -> ApiError {
    ApiError::json(
        StatusCode::NOT_FOUND,
        "Error: Specified client_id does not exist.",
    )
}

/// `GET /v1/client-permissions`
pub async fn list(State(app): State<Arc<App>>) -> ApiResult {
    let clients = app.store.clients().await?;
    let shown: Vec<Value> = clients
        .iter()
        .map(|c| Value::Object(c.permissions()))
        .collect();
    Ok(reply::json(&Value::Array(shown)))
}

/// `GET /v1/client-permissions/<id>`
pub async fn show(State(app): State<Arc<App>>, Path(client_id): Path<String>) -> ApiResult {
    let (client, _) = app
        .store
        .client(&client_id)
        .await?
        .ok_or_else(unknown_client)?;
    Ok(reply::json(&Value::Object(client.permissions())))
}

/// `PUT /v1/client-permissions/<id>`: creates a client or updates some of its fields.
pub async fn put(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(client_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let mut update =
        validate_body(&body, BodySchema::ClientPermissions).map_err(ApiError::invalid_body)?;
    reply::check_name(NameKind::Client, &client_id)?;
    if client_id == SYSTEM_ADMIN {
        return Err(ApiError::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Error: System admin client cannot by modified from API.",
        ));
    }
    let existing = app
        .store
        .client(&client_id)
        .await?
        .map(|(client, _)| client);
    let secret = update
        .remove("client_secret")
        .and_then(|v| v.as_str().map(str::to_string));
    if existing.is_none() && secret.is_none() {
        return Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "Error: Missing client_secret in request body for new client",
        ));
    }
    let requester = identity
        .client_id
        .clone()
        .unwrap_or_else(|| "anonymous".into());
    let current_role = existing
        .as_ref()
        .and_then(|c| Role::parse(&c.role))
        .unwrap_or(Role::Contributor);
    if identity.role < current_role {
        return Err(ApiError::json(
            StatusCode::FORBIDDEN,
            format!("{requester} has insufficient permissions to modify client '{client_id}'"),
        ));
    }
    let new_role = update
        .get("role")
        .and_then(Value::as_str)
        .and_then(Role::parse);
    if let Some(role) = new_role.filter(|role| identity.role < *role) {
        return Err(ApiError::json(
            StatusCode::FORBIDDEN,
            format!(
                "{requester} has insufficient permissions to assign role '{}' to client '{client_id}'",
                role.as_str()
            ),
        ));
    }
    let created = existing.is_none();
    let mut client = existing.unwrap_or(Client {
        client_id: client_id.clone(),
        role: Role::Contributor.as_str().into(),
        ..Client::default()
    });
    let object = |value: Option<Value>| value.and_then(|v| v.as_object().cloned());
    if let Some(role) = new_role {
        client.role = role.as_str().into();
    }
    if let Some(map) = object(update.remove("max_priority")) {
        client.max_priority = Some(map);
    }
    if let Some(map) = object(update.remove("max_reservation_time")) {
        client.max_reservation_time = Some(map);
    }
    if let Some(email) = update
        .remove("email")
        .and_then(|v| v.as_str().map(str::to_string))
    {
        client.email = Some(email);
    }
    // A new secret or a lower role ends what the old credentials could still do.
    let lowered = new_role.is_some_and(|role| role < current_role);
    let refresh_tokens = if secret.is_some() || lowered {
        RefreshTokens::Revoke
    } else {
        RefreshTokens::Keep
    };
    let hash = match secret {
        Some(secret) => Some(app.bcrypt.hash(secret).await?),
        None => None,
    };
    app.store.save_client(client, hash, refresh_tokens).await?;
    let verb = if created { "Created" } else { "Updated" };
    Ok(reply::text(
        StatusCode::OK,
        format!("{verb} permissions for client '{client_id}'"),
    ))
}

/// `DELETE /v1/client-permissions/<id>` (admin).
pub async fn delete(State(app): State<Arc<App>>, Path(client_id): Path<String>) -> ApiResult {
    if client_id == SYSTEM_ADMIN {
        return Err(ApiError::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Error: System admin client cannot by deleted from API.",
        ));
    }
    if app.store.remove_client(&client_id).await? {
        Ok(reply::ok_text())
    } else {
        Err(unknown_client())
    }
}

fn queue_document(queue: String, owners: Vec<String>) -> Value {
    json!({"queue": queue, "owners": owners})
}

fn not_restricted() -> ApiError {
    ApiError::json(StatusCode::NOT_FOUND, "Error: Restricted queue not found.")
}

/// `GET /v1/restricted-queues`
pub async fn restricted_queues(State(app): State<Arc<App>>) -> ApiResult {
    let queues = app.store.restricted_queues().await?;
    let shown: Vec<Value> = queues
        .into_iter()
        .map(|(q, owners)| queue_document(q, owners))
        .collect();
    Ok(reply::json(&Value::Array(shown)))
}

/// `GET /v1/restricted-queues/<queue>`
pub async fn restricted_queue(State(app): State<Arc<App>>, Path(queue): Path<String>) -> ApiResult {
    let owners = app
        .store
        .restricted_queue(&queue)
        .await?
        .ok_or_else(not_restricted)?;
    Ok(reply::json(&queue_document(queue, owners)))
}

/// A restricted-queue body, validated (a missing `client_id` is a 422).
fn owner_body(body: &Value) -> Result<Map<String, Value>, ApiError> {
    validate_body(body, BodySchema::QueueOwner).map_err(ApiError::invalid_body)
}

/// The `client_id` of a validated restricted-queue body; empty is a 400.
fn owner(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("client_id").and_then(Value::as_str) {
        Some("") | None => Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "Error: Missing client ID.",
        )),
        Some(client_id) => Ok(client_id.to_string()),
    }
}

/// `POST /v1/restricted-queues/<queue>`: restricts the queue and lets the client in.
pub async fn restrict(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let client_id = owner(&owner_body(&body)?)?;
    app.store
        .client(&client_id)
        .await?
        .ok_or_else(unknown_client)?;
    if app.store.agents_on_queue(&queue).await?.is_empty() {
        return Err(ApiError::json(
            StatusCode::NOT_FOUND,
            "Error: No agent is associated with the specified queue.",
        ));
    }
    app.store.restrict_queue(&queue, &client_id).await?;
    Ok(reply::ok_text())
}

/// `DELETE /v1/restricted-queues/<queue>`: lifts the restriction (for everyone, like
/// the reference) and takes the queue from that client.
pub async fn unrestrict(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let body = owner_body(&body)?;
    app.store
        .restricted_queue(&queue)
        .await?
        .ok_or_else(not_restricted)?;
    let client_id = owner(&body)?;
    app.store.unrestrict_queue(&queue, &client_id).await?;
    Ok(reply::ok_text())
}
