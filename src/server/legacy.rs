//! The Redis-era result API, for the agents and CLIs of that time still found in labs
//! (docs/compatibility.md, "Client generations"): free-form result documents posted
//! to `POST /v1/result/<id>`, and the raw `output` and `serial_output` text streams.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde_json::{json, Map, Value};

use super::app::App;
use super::extract::BoundedBody;
use super::jobs::check_job_id_text;
use super::reply::{self, ApiError, ApiResult};
use crate::job::{LogType, Phase};
use crate::store::LegacyResult;

/// The keys of the current result report; a body with any other key is an old agent's
/// result document.
const CURRENT_KEYS: [&str; 3] = ["job_state", "status", "device_info"];

/// Takes the keys of an old agent's result document out of a `POST /v1/result` body,
/// leaving the current report's keys for the usual validation. `None` when the body has
/// no other key (or is not an object, which that validation refuses).
pub fn take_legacy_result(body: &mut Value) -> Result<Option<LegacyResult>, ApiError> {
    let Some(fields) = body.as_object_mut() else {
        return Ok(None);
    };
    let legacy_keys: Vec<String> = fields
        .keys()
        .filter(|key| !CURRENT_KEYS.contains(&key.as_str()))
        .cloned()
        .collect();
    if legacy_keys.is_empty() {
        return Ok(None);
    }
    let mut result = LegacyResult {
        statuses: Map::new(),
        document: Map::new(),
    };
    let mut errors = Map::new();
    for key in legacy_keys {
        let value = fields.remove(&key).unwrap_or_default();
        match status_phase(&key) {
            // An exit code is the job's status of that phase, whoever reports it.
            Some(phase) if value.is_i64() => {
                result.statuses.insert(phase.to_string(), value);
            }
            Some(_) => {
                errors.insert(key, json!(["Not a valid integer."]));
            }
            None => {
                result.document.insert(key, value);
            }
        }
    }
    if errors.is_empty() {
        Ok(Some(result))
    } else {
        Err(ApiError::invalid_body(Value::Object(errors)))
    }
}

/// Adds an old agent's result document to the results view. Its outcome holds the
/// agent's own copy of every phase's logs, which the old server showed: that copy
/// replaces the logs built from what it streamed, where the phases are only guessed
/// (its cleanup output, for one, arrives while the job still reports the phase before).
pub fn add_legacy_result(view: &mut Map<String, Value>, document: Map<String, Value>) {
    for suffix in ["_output", "_serial"] {
        if document.keys().any(|key| key.ends_with(suffix)) {
            view.retain(|key, _| !key.ends_with(suffix));
        }
    }
    view.extend(document);
}

/// The phase of a `<phase>_status` key.
fn status_phase(key: &str) -> Option<&'static str> {
    let phase = key.strip_suffix("_status")?;
    Phase::parse(phase).map(Phase::as_str)
}

/// `POST /v1/result/<id>/output`: raw text of the job's live output.
pub async fn post_output(
    state: State<Arc<App>>,
    Path(job_id): Path<String>,
    body: BoundedBody,
) -> ApiResult {
    append(state, &job_id, LogType::Output, body).await
}

/// `POST /v1/result/<id>/serial_output`: raw text of the device's serial log.
pub async fn post_serial_output(
    state: State<Arc<App>>,
    Path(job_id): Path<String>,
    body: BoundedBody,
) -> ApiResult {
    append(state, &job_id, LogType::Serial, body).await
}

/// `GET /v1/result/<id>/output`
pub async fn get_output(state: State<Arc<App>>, Path(job_id): Path<String>) -> ApiResult {
    take(state, &job_id, LogType::Output).await
}

/// `GET /v1/result/<id>/serial_output`
pub async fn get_serial_output(state: State<Arc<App>>, Path(job_id): Path<String>) -> ApiResult {
    take(state, &job_id, LogType::Serial).await
}

/// Appends posted text (any bytes: what is not UTF-8 becomes U+FFFD, as old agents
/// decode their output) to the job's log. The body is bounded like every other.
async fn append(
    State(app): State<Arc<App>>,
    job_id: &str,
    log_type: LogType,
    body: BoundedBody,
) -> ApiResult {
    check_job_id_text(job_id)?;
    if !body.0.is_empty() {
        let text = String::from_utf8_lossy(&body.0).into_owned();
        app.store
            .append_legacy_output(job_id, log_type.as_str(), text)
            .await?;
        app.metrics.fragment_stored(log_type);
    }
    Ok(reply::ok_text())
}

/// Everything appended to the log since the previous read, which it then forgets
/// (204 when there is nothing new), as old clients poll it.
async fn take(State(app): State<Arc<App>>, job_id: &str, log_type: LogType) -> ApiResult {
    check_job_id_text(job_id)?;
    let text = app
        .store
        .take_legacy_output(job_id, log_type.as_str())
        .await?;
    if text.is_empty() {
        return Ok(reply::no_content());
    }
    Ok(reply::untrusted_text(text))
}
