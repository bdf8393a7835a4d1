//! The four response styles of the reference API, and the error type every handler
//! returns. Clients depend on the style of each answer, so handlers pick one of these
//! instead of building responses by hand.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::job::names::NameKind;
use crate::store::StoreError;

/// Plain text, labelled the way Flask labels bare strings.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Text someone else wrote (a job's output): labelled plain text, so a browser shows
/// it instead of running markup in it.
pub fn untrusted_text(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn ok_text() -> Response {
    text(StatusCode::OK, "OK")
}

pub fn json_body(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn json(value: &Value) -> Response {
    json_body(StatusCode::OK, value)
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Everything a handler can fail with, each rendered in the reference's style.
#[derive(Debug)]
pub enum ApiError {
    /// `{"detail": {}, "message": "..."}`
    Json(StatusCode, String),
    /// A JSON error whose `message` is an object (the log query errors).
    JsonObject(StatusCode, Value),
    /// A bare text body.
    Text(StatusCode, String),
    /// 422 `{"detail": {"<location>": {...}}, "message": "Validation error"}`
    Validation(&'static str, Value),
    Store(StoreError),
}

impl ApiError {
    pub fn json(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::Json(status, message.into())
    }

    pub fn text(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::Text(status, message.into())
    }

    pub fn bad_request() -> ApiError {
        ApiError::json(StatusCode::BAD_REQUEST, "Bad Request")
    }

    pub fn invalid_body(detail: Value) -> ApiError {
        ApiError::Validation("json", detail)
    }

    pub fn invalid_query(detail: Value) -> ApiError {
        ApiError::Validation("query", detail)
    }
}

/// Refuses (422) a name from a path, a query or a cookie that is outside its kind's limits.
pub fn check_name(kind: NameKind, name: &str) -> Result<(), ApiError> {
    kind.check(name).map_err(|error| {
        ApiError::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid {}: {error}", kind.describe()),
        )
    })
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Store(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Json(status, message) => {
                json_body(status, &json!({"detail": {}, "message": message}))
            }
            ApiError::JsonObject(status, message) => {
                json_body(status, &json!({"detail": {}, "message": message}))
            }
            ApiError::Text(status, message) => text(status, message),
            ApiError::Validation(location, mut detail) => {
                cap_error_tree(&mut detail);
                json_body(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"detail": {location: detail}, "message": "Validation error"}),
                )
            }
            ApiError::Store(error) => {
                tracing::error!("storage failure: {error}");
                json_body(
                    store_failure_status(&error),
                    &json!({"detail": {}, "message": error.to_string()}),
                )
            }
        }
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// The status of an answer the store could not give: 507 for a full disk, 503 for what
/// passes by itself (a database that is away, a server stopping), else 500.
pub fn store_failure_status(error: &StoreError) -> StatusCode {
    match error {
        StoreError::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::Closed | StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The most entries a 422 error tree shows; a body of 100,000 unknown keys gets a short
/// answer, not a 5 MB one.
const MAX_ERROR_ENTRIES: usize = 100;

/// Keeps the first `MAX_ERROR_ENTRIES` entries of an error tree (counted depth first)
/// and says how many more there were under `_more`.
fn cap_error_tree(detail: &mut Value) {
    fn keep(value: &mut Value, budget: &mut usize) -> usize {
        let Value::Object(entries) = value else {
            return 0;
        };
        let mut dropped = 0;
        entries.retain(|_, child| {
            if *budget == 0 {
                dropped += 1 + count(child);
                return false;
            }
            *budget -= 1;
            dropped += keep(child, budget);
            true
        });
        dropped
    }
    fn count(value: &Value) -> usize {
        match value {
            Value::Object(entries) => entries.values().map(|child| 1 + count(child)).sum(),
            _ => 0,
        }
    }
    let mut budget = MAX_ERROR_ENTRIES;
    let dropped = keep(detail, &mut budget);
    if let (Value::Object(entries), true) = (detail, dropped > 0) {
        entries.insert(
            "_more".into(),
            json!([format!("{dropped} more errors not shown.")]),
        );
    }
}
