//! `PUT`/`DELETE /v1/secrets/<client_id>/<path>`: a client's secrets, which only agents
//! ever receive (resolved into the job they claim).

use std::sync::{Arc, LazyLock};

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use regex_lite::Regex;
use serde_json::{json, Value};

use super::app::App;
use super::auth::Identity;
use super::extract::JsonBody;
use super::reply::{self, ApiError, ApiResult};
use crate::job::names::NameKind;
use crate::job::time;
use crate::job::validate::{validate_body, BodySchema};
use crate::store::Expiry;

static SECRET_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_-]+(/[a-zA-Z0-9_-]+)*$").expect("a valid regex"));

/// A year, the reference's default lifetime of a secret.
const DEFAULT_LIFETIME_SECONDS: i64 = 31_536_000;

/// The checks both endpoints share, in the reference's order.
fn check(
    app: &App,
    identity: &Identity,
    client_id: &str,
    path: &str,
    login_message: &str,
) -> Result<(), ApiError> {
    if !app.store.has_secrets_store() {
        return Err(ApiError::json(StatusCode::BAD_REQUEST, "No secrets store"));
    }
    let Some(caller) = &identity.client_id else {
        return Err(ApiError::json(StatusCode::UNAUTHORIZED, login_message));
    };
    if caller != client_id {
        return Err(ApiError::json(
            StatusCode::FORBIDDEN,
            format!("'{client_id}' doesn't match authenticated client id"),
        ));
    }
    reply::check_name(NameKind::SecretPath, path)?;
    if !SECRET_PATH.is_match(path) {
        return Err(ApiError::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid value '{path}', not a valid path. \nPaths must only contain alphanumeric characters, hyphens (-), underscores (_), and forward slashes (/). Additionally, paths must not start or end with a forward slash (/)."),
        ));
    }
    Ok(())
}

/// Python's `isoformat()` of a UTC datetime: microseconds only when there are some.
fn python_isoformat(at: time::Micros) -> String {
    let seconds = time::render(at);
    let base = seconds.trim_end_matches('Z');
    match at.rem_euclid(1_000_000) {
        0 => format!("{base}+00:00"),
        micros => format!("{base}.{micros:06}+00:00"),
    }
}

/// `PUT /v1/secrets/<client_id>/<path>`
pub async fn put(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Arc<Identity>>,
    Path((client_id, path)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let secret = validate_body(&body, BodySchema::Secret).map_err(ApiError::invalid_body)?;
    check(
        &app,
        &identity,
        &client_id,
        &path,
        "A login (known client_id) is required to securely storeinformation.",
    )?;
    let expiry = if secret.get("ephemeral") == Some(&Value::Bool(true)) {
        Expiry::AfterFirstRead
    } else {
        match secret.get("expire_after") {
            None => Expiry::At(time::now() + DEFAULT_LIFETIME_SECONDS * 1_000_000),
            Some(Value::Null) => Expiry::Never,
            Some(seconds) => seconds
                .as_i64()
                .and_then(|seconds| seconds.checked_mul(1_000_000))
                .and_then(|micros| time::now().checked_add(micros))
                .map(Expiry::At)
                .ok_or_else(|| {
                    ApiError::invalid_body(json!({"expire_after": ["Number too large."]}))
                })?,
        }
    };
    let value = secret
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or_default();
    app.store
        .put_secret(&client_id, &path, value, expiry)
        .await?;
    let expires_at = match expiry {
        Expiry::At(at) => Value::String(python_isoformat(at)),
        Expiry::Never | Expiry::AfterFirstRead => Value::Null,
    };
    Ok(reply::json(&json!({ "expires_at": expires_at })))
}

/// `DELETE /v1/secrets/<client_id>/<path>`
pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Arc<Identity>>,
    Path((client_id, path)): Path<(String, String)>,
) -> ApiResult {
    check(
        &app,
        &identity,
        &client_id,
        &path,
        "A login (known client_id) is required to securely store information.",
    )?;
    app.store.delete_secret(&client_id, &path).await?;
    Ok(reply::ok_text())
}
