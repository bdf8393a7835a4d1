//! `POST /v1/job/<id>/events`: the agent's job status events, relayed to the job's
//! webhook with a `PUT`. Only the configured webhook host may be targeted, so agents
//! cannot make the server call arbitrary URLs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::app::App;
use super::extract::JsonBody;
use super::jobs::check_job_id;
use super::reply::{self, ApiError, ApiResult};
use crate::job::validate::{validate_body, BodySchema};

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(3);

/// Scheme, host and port: what a `job_status_webhook` must share with `webhook_url`.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let authority = uri.authority()?;
    Some((
        scheme,
        authority.host().to_ascii_lowercase(),
        authority.port_u16().unwrap_or(default_port),
    ))
}

pub async fn relay(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let mut update =
        validate_body(&body, BodySchema::StatusUpdate).map_err(ApiError::invalid_body)?;
    check_job_id(&job_id)?;
    if app.store.job_definition(&job_id).await?.is_none() {
        return Err(ApiError::json(StatusCode::NOT_FOUND, "Job not found"));
    }
    let Some(allowed) = &app.config.webhook_url else {
        return Err(ApiError::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Webhook URL not configured",
        ));
    };
    let target = match update.remove("job_status_webhook") {
        Some(Value::String(target)) => target,
        _ => String::new(),
    };
    if origin(&target).is_none() || origin(&target) != origin(allowed) {
        return Err(ApiError::json(
            StatusCode::FORBIDDEN,
            "Invalid job_status_webhook URL specified",
        ));
    }
    let payload = Bytes::from(Value::Object(update).to_string());
    let mut outcome = send(&app, &target, payload.clone()).await;
    if matches!(outcome, Err(Failure::Unreachable)) {
        outcome = send(&app, &target, payload).await;
    }
    match outcome {
        Ok((status, _))
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN =>
        {
            Err(ApiError::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Webhook authentication failed",
            ))
        }
        Ok((status, text)) => Ok(reply::text(status, text)),
        Err(Failure::Timeout) => Err(ApiError::json(
            StatusCode::GATEWAY_TIMEOUT,
            "Webhook Timeout",
        )),
        Err(Failure::Unreachable) => Err(ApiError::json(
            StatusCode::BAD_GATEWAY,
            "Webhook unreachable",
        )),
    }
}

enum Failure {
    Timeout,
    Unreachable,
}

async fn send(app: &App, target: &str, payload: Bytes) -> Result<(StatusCode, String), Failure> {
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(target)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = &app.config.webhook_auth {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(payload))
        .map_err(|_| Failure::Unreachable)?;
    let exchange = async {
        let response = app
            .http
            .request(request)
            .await
            .map_err(|_| Failure::Unreachable)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Unreachable)?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(WEBHOOK_TIMEOUT, exchange)
        .await
        .map_err(|_| Failure::Timeout)?
}
