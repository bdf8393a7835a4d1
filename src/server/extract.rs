//! Reading requests the way the reference does: JSON bodies (an empty body is `{}`,
//! a malformed one is 400, an oversized one 413), repeated query parameters, the
//! `agent_name` cookie, and the `file` part of multipart uploads streamed to disk.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::app::App;
use super::json_limits::{self, JsonRefusal};
use super::reply::ApiError;
use crate::store::blobs::UploadError;
use crate::store::StoredBlob;

/// A request body parsed as JSON, bounded by the server's body limit.
pub struct JsonBody(pub Value);

/// The raw bytes of a JSON request body, bounded by the server's body limit, for
/// handlers that parse straight into a typed struct on their hot path. A body that is
/// not declared `application/json` is refused (415), as the reference's framework does:
/// a browser form on another site cannot send that type without asking first.
pub struct JsonBytes(pub Bytes);

impl FromRequest<std::sync::Arc<App>> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &std::sync::Arc<App>) -> Result<Self, ApiError> {
        let declared_json = declares_json(request.headers());
        let BoundedBody(bytes) = BoundedBody::from_request(request, app).await?;
        if !bytes.is_empty() && !declared_json {
            return Err(ApiError::json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type: the body must be sent as Content-Type: application/json",
            ));
        }
        Ok(JsonBytes(bytes))
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`,
/// any parameters).
fn declares_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = mime.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// A request body of any type, bounded by the server's body limit.
pub struct BoundedBody(pub Bytes);

impl FromRequest<std::sync::Arc<App>> for BoundedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &std::sync::Arc<App>) -> Result<Self, ApiError> {
        let bytes = Limited::new(request.into_body(), app.config.max_body_size)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    ApiError::json(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large")
                } else {
                    ApiError::bad_request()
                }
            })?
            .to_bytes();
        Ok(BoundedBody(bytes))
    }
}

/// Bodies larger than this are parsed on the blocking pool, so that a few big ones cannot
/// hold up the async workers that answer everyone else.
const PARSE_ON_WORKER_BYTES: usize = 64 * 1024;

impl JsonBytes {
    /// Parses like the reference (an empty body is `{}`, anything else that is not JSON,
    /// whitespace alone included, is a 400), within the server's JSON limits (413).
    pub async fn parse(&self) -> Result<Value, ApiError> {
        if self.0.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        let parsed = self
            .read_with(|bytes| json_limits::parse(bytes, json_limits::LIMITS))
            .await
            .unwrap_or(Err(JsonRefusal::Malformed));
        parsed.map_err(|refusal| match refusal {
            JsonRefusal::Malformed => ApiError::bad_request(),
            JsonRefusal::TooComplex(why) => ApiError::json(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("JSON body too complex: {why}"),
            ),
        })
    }

    /// Runs `read` over the body: on this worker when the body is small, else on the
    /// blocking pool. `None` if that task failed.
    pub async fn read_with<T: Send + 'static>(&self, read: fn(&[u8]) -> T) -> Option<T> {
        if self.0.len() <= PARSE_ON_WORKER_BYTES {
            return Some(read(&self.0));
        }
        let bytes = self.0.clone();
        tokio::task::spawn_blocking(move || read(&bytes)).await.ok()
    }
}

impl FromRequest<std::sync::Arc<App>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &std::sync::Arc<App>) -> Result<Self, ApiError> {
        JsonBytes::from_request(request, app)
            .await?
            .parse()
            .await
            .map(JsonBody)
    }
}

/// The query string as ordered `(name, value)` pairs; names may repeat.
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn last<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.all(name).last()
    }

    /// The parameter names not in `known`.
    pub fn unknown<'a>(&'a self, known: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .map(|(key, _)| key.as_str())
            .filter(move |key| !known.contains(key))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        Ok(QueryPairs(
            form_urlencoded::parse(query.as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        ))
    }
}

/// The `agent_name` cookie set by `POST /v1/agents/data/<name>`.
pub struct AgentCookie(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for AgentCookie {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let name = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == "agent_name")
            .map(|(_, value)| value.trim_matches('"').to_string())
            .filter(|name| !name.is_empty());
        Ok(AgentCookie(name))
    }
}

/// Streams the multipart part named `file` to a new blob. A request that is not
/// multipart, or has no `file` part, is a 400 like the reference's.
pub async fn receive_file(app: &App, request: Request<Body>) -> Result<StoredBlob, ApiError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|_| ApiError::bad_request())?;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|_| ApiError::bad_request())?
    {
        if field.name() != Some("file") {
            continue;
        }
        let mut upload = app.store.start_upload(app.config.max_upload_size).await?;
        while let Some(chunk) = field.chunk().await.map_err(|_| ApiError::bad_request())? {
            upload.write(&chunk).await.map_err(|error| match error {
                UploadError::TooLarge(_) => {
                    ApiError::json(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
                }
                UploadError::Store(error) => ApiError::Store(error),
            })?;
        }
        return Ok(upload.finish().await?);
    }
    Err(ApiError::bad_request())
}
