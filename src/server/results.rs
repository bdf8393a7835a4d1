//! Result handlers: the agent's state/status reports, the results view, artifacts and
//! log fragments.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use serde_json::{json, Map, Value};

use super::app::App;
use super::extract::{receive_file, JsonBody, JsonBytes, QueryPairs};
use super::jobs::{check_job_id, check_job_id_text, send_blob, wait_parameter};
use super::legacy;
use super::reply::{self, ApiError, ApiResult};
use crate::api::v1::LogFragment;
use crate::job::time::parse_iso8601;
use crate::job::validate::{validate_body, BodySchema};
use crate::job::{is_valid_job_id, LogType, Phase};
use crate::store::{BlobKind, Fragment, FragmentQuery, ResultUpdate};

/// `POST /v1/result/<id>`: the agent reports `job_state`, `status`, `device_info`; an
/// old agent's free-form result document may come with them (see `legacy`).
pub async fn post_result(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
    JsonBody(mut body): JsonBody,
) -> ApiResult {
    let legacy = legacy::take_legacy_result(&mut body)?;
    let mut report =
        validate_body(&body, BodySchema::ResultPost).map_err(ApiError::invalid_body)?;
    check_job_id(&job_id)?;
    // Before the state: whoever sees the job `complete` also sees its outcome.
    if let Some(legacy) = legacy {
        app.store.merge_legacy_result(&job_id, legacy).await?;
    }
    let update = ResultUpdate {
        job_state: report
            .remove("job_state")
            .and_then(|v| v.as_str().map(str::to_string)),
        status: report.remove("status").and_then(|v| v.as_object().cloned()),
        device_info: report.remove("device_info"),
    };
    app.store.update_result(&job_id, update).await?;
    Ok(reply::ok_text())
}

/// `GET /v1/result/<id>`: state, device info, and per phase its exit status and logs.
/// Extensions: `?logs=false` leaves the logs out, so an agent checking for cancellation
/// every second costs the server one row read; `outcome` (job/outcome.rs) once the job
/// has finished, absent before.
pub async fn get_result(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
    query: QueryPairs,
) -> ApiResult {
    check_job_id(&job_id)?;
    let with_logs = query.last("logs") != Some("false");
    let Some(result) = app.store.result(&job_id).await? else {
        return Ok(reply::no_content());
    };
    let mut view = Map::new();
    view.insert("job_state".into(), Value::String(result.job_state));
    if let Some(device_info) = result.device_info {
        view.insert("device_info".into(), device_info);
    }
    if let Some(outcome) = result.outcome {
        view.insert("outcome".into(), json!(outcome));
    }
    for phase in Phase::NAMES {
        if let Some(status) = result.status.get(phase).filter(|s| !s.is_null()) {
            view.insert(format!("{phase}_status"), status.clone());
        }
    }
    let logs = if with_logs {
        app.store.full_logs(&job_id).await?
    } else {
        Vec::new()
    };
    for (phase, log_type, text) in logs {
        let suffix = if log_type == "output" {
            "output"
        } else {
            "serial"
        };
        if Phase::parse(&phase).is_some() {
            view.insert(format!("{phase}_{suffix}"), Value::String(text));
        }
    }
    if with_logs {
        legacy::add_legacy_result(&mut view, app.store.legacy_result(&job_id).await?);
    }
    Ok(reply::json(&Value::Object(view)))
}

/// `POST /v1/result/<id>/artifact`: the agent's artifact archive. Unlike the reference,
/// only for a job that exists (checked before the upload is read, and again as it is
/// recorded, in case the job expired meanwhile).
pub async fn upload_artifact(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
    request: Request<Body>,
) -> ApiResult {
    check_job_id_text(&job_id)?;
    check_job_exists(&app, &job_id).await?;
    let blob = receive_file(&app, request).await?;
    if !app.store.put_artifact(&job_id, blob).await? {
        return Err(no_such_job());
    }
    Ok(reply::ok_text())
}

async fn check_job_exists(app: &App, job_id: &str) -> Result<(), ApiError> {
    if app.store.job_exists(job_id).await? {
        Ok(())
    } else {
        Err(no_such_job())
    }
}

/// The reference's answer for a missing job where it checks (job events).
fn no_such_job() -> ApiError {
    ApiError::json(StatusCode::NOT_FOUND, "Job not found")
}

/// `GET /v1/result/<id>/artifact`: the archive's bytes as stored; 204 when there are
/// none, also for a job that does not exist (the reference CLI words only a 204 as "No
/// artifacts tarball found"). Not labelled `Content-Encoding: gzip` as the reference
/// does: clients that honour it (the 2022 CLI, browsers) would save the unpacked tar
/// under the `.tar.gz` name.
pub async fn download_artifact(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
) -> ApiResult {
    check_job_id_text(&job_id)?;
    let headers = [
        (
            header::CONTENT_DISPOSITION,
            "inline; filename=artifact.tar.gz",
        ),
        (header::CONTENT_TYPE, "application/gzip"),
    ];
    send_blob(&app, &job_id, BlobKind::Artifact, &headers).await
}

pub(super) fn parse_log_type(log_type: &str) -> Result<LogType, ApiError> {
    LogType::parse(log_type).ok_or_else(|| {
        ApiError::json(
            StatusCode::NOT_FOUND,
            format!("Unknown log type '{log_type}': must be output or serial"),
        )
    })
}

/// A log fragment exactly as agents send it, parsed without an intermediate tree (this
/// is the busiest write of a lab), or else through the schema validation with its
/// detailed 422 (which also accepts what marshmallow coerces, such as a numeric string as
/// the number).
async fn read_fragment(body: &JsonBytes) -> Result<Fragment, ApiError> {
    if let Some(fragment) = serde_json::from_slice(&body.0)
        .ok()
        .and_then(typed_fragment)
    {
        return Ok(fragment);
    }
    validated_fragment(&body.parse().await?).map_err(ApiError::invalid_body)
}

/// A fragment parsed as agents send it, for the store; `None` when its timestamp is not
/// one the store reads (then `validated_fragment` says why, or coerces it).
pub(super) fn typed_fragment(post: LogFragment) -> Option<Fragment> {
    Some(Fragment {
        timestamp: parse_iso8601(&post.timestamp)?,
        fragment_number: post.fragment_number,
        phase: post.phase,
        log_data: post.log_data,
    })
}

/// A fragment checked against the reference's schema; `Err` holds its error tree. (What
/// passes the schema also parses as `LogFragment`, coerced; the fallback is only a guard.)
pub(super) fn validated_fragment(body: &Value) -> Result<Fragment, Value> {
    let fields = validate_body(body, BodySchema::LogPost)?;
    serde_json::from_value(Value::Object(fields))
        .ok()
        .and_then(typed_fragment)
        .ok_or_else(|| json!({"_schema": ["Invalid input type."]}))
}

/// `POST /v1/result/<id>/log/<type>`: one fragment of live output or serial log.
pub async fn post_log(
    State(app): State<Arc<App>>,
    Path((job_id, log_type)): Path<(String, String)>,
    body: JsonBytes,
) -> ApiResult {
    let kind = parse_log_type(&log_type)?;
    let fragment = read_fragment(&body).await?;
    check_job_id(&job_id)?;
    app.store
        .append_log_fragment(&job_id, &log_type, fragment)
        .await?;
    app.metrics.fragment_stored(kind);
    Ok(reply::ok_text())
}

/// `GET /v1/result/<id>/log/<type>?start_fragment=&start_timestamp=&phase=[&wait=]`
pub async fn get_log(
    State(app): State<Arc<App>>,
    Path((job_id, log_type)): Path<(String, String)>,
    query: QueryPairs,
) -> ApiResult {
    parse_log_type(&log_type)?;
    let fragment_query = log_query(&query)?;
    let wait = wait_parameter(&query)?;
    if !is_valid_job_id(&job_id) {
        return Err(ApiError::json(StatusCode::BAD_REQUEST, "Invalid job id\n"));
    }
    let logs = app
        .store
        .log(&job_id, &log_type, fragment_query, wait)
        .await?;
    let phases: Map<String, Value> = logs
        .into_iter()
        .map(|log| {
            (
                log.phase.to_string(),
                json!({"last_fragment_number": log.last_fragment_number, "log_data": log.log_data}),
            )
        })
        .collect();
    Ok(reply::json(&json!({ log_type: phases })))
}

/// Parses the log query; errors are a 400 whose `message` is the field-error object.
fn log_query(query: &QueryPairs) -> Result<FragmentQuery, ApiError> {
    let mut errors = Map::new();
    for unknown in query.unknown(&["start_fragment", "start_timestamp", "phase", "wait"]) {
        errors.insert(unknown.to_string(), json!(["Unknown field."]));
    }
    let mut parsed = FragmentQuery::default();
    if let Some(text) = query.last("start_fragment") {
        match text.trim().parse::<i64>() {
            Ok(n) if n >= 0 => parsed.start_fragment = n,
            Ok(_) => {
                errors.insert(
                    "start_fragment".into(),
                    json!(["Must be greater than or equal to 0."]),
                );
            }
            Err(_) => {
                errors.insert("start_fragment".into(), json!(["Not a valid integer."]));
            }
        }
    }
    if let Some(text) = query.last("start_timestamp") {
        match parse_iso8601(text) {
            Some(at) => parsed.start_timestamp = Some(at),
            None => {
                errors.insert("start_timestamp".into(), json!(["Not a valid datetime."]));
            }
        }
    }
    if let Some(phase) = query.last("phase") {
        if Phase::parse(phase).is_some() {
            parsed.phase = Some(phase.to_string());
        } else {
            let message = format!("Must be one of: {}.", Phase::NAMES.join(", "));
            errors.insert("phase".into(), json!([message]));
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(ApiError::JsonObject(
            StatusCode::BAD_REQUEST,
            Value::Object(errors),
        ))
    }
}
