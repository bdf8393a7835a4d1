//! Job handlers: submit, claim, view, search, cancel, position, attachments.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

use super::app::App;
use super::auth::Identity;
use super::auth::Role;
use super::extract::{receive_file, AgentCookie, JsonBody, QueryPairs};
use super::permissions;
use super::reply::{self, ApiError, ApiResult};
use crate::job::names::NameKind;
use crate::job::validate::{validate_body, validate_job, BodySchema, ValidJob};
use crate::job::{self, is_valid_job_id, time};
use crate::store::{AttachmentGate, AttachmentReceipt, BlobKind, JobFilter, NewJob, StoreError};

/// How many distinct queues one claim may name (each is a branch of the claim query).
const MAX_CLAIM_QUEUES: usize = 64;

/// The longest long-poll a client may ask for with `wait=`.
pub const MAX_WAIT_SECONDS: u64 = 60;

pub fn check_job_id(job_id: &str) -> Result<(), ApiError> {
    if is_valid_job_id(job_id) {
        Ok(())
    } else {
        Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "Invalid job_id specified",
        ))
    }
}

/// The variant of the id check whose error is plain text (the reference is inconsistent).
pub fn check_job_id_text(job_id: &str) -> Result<(), ApiError> {
    if is_valid_job_id(job_id) {
        Ok(())
    } else {
        Err(ApiError::text(StatusCode::BAD_REQUEST, "Invalid job id\n"))
    }
}

/// Reads the `wait` extension parameter: whole seconds, capped at `MAX_WAIT_SECONDS`.
pub fn wait_parameter(query: &QueryPairs) -> Result<Duration, ApiError> {
    match query.last("wait") {
        None => Ok(Duration::ZERO),
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .map(|seconds| Duration::from_secs_f64(seconds.min(MAX_WAIT_SECONDS as f64)))
            .ok_or_else(|| ApiError::invalid_query(json!({"wait": ["Not a valid number."]}))),
    }
}

/// `POST /v1/job`
pub async fn submit(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Arc<Identity>>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let job = validate_job(&body).map_err(ApiError::invalid_body)?;
    if !job.exclude_agents.is_empty()
        && app
            .store
            .eligible_agents(&job.queue, &job.exclude_agents)
            .await?
            == 0
    {
        return Err(ApiError::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            "There are no agents on the specified queue that are allowed to run this job",
        ));
    }
    check_secrets(&app, &identity, &job).await?;
    if let Some(id) = &job.requested_id {
        check_job_id(id)?;
    }
    permissions::check_submission(&app, &identity, &job).await?;
    let job_id = job.requested_id.clone().unwrap_or_else(job::new_job_id);
    let stored = app
        .store
        .submit_job(NewJob {
            job_id: job_id.clone(),
            queue: job.queue,
            priority: job.priority,
            awaits_attachments: job.awaits_attachments,
            exclude_agents: job.exclude_agents,
            submitter: identity.client_id.clone(),
            data: job.data,
        })
        .await;
    match stored {
        Ok(()) => {
            app.metrics.job_submitted();
            Ok(reply::json(&json!({ "job_id": job_id })))
        }
        Err(StoreError::DuplicateJob(id)) => Err(ApiError::json(
            StatusCode::CONFLICT,
            format!("Job {id} already exists"),
        )),
        Err(error) => Err(error.into()),
    }
}

/// The secret paths a job names (`test_data.secrets`: `{ENV_NAME: path}`).
fn secret_paths(data: &Map<String, Value>) -> Option<&Map<String, Value>> {
    data.get("test_data")?.get("secrets")?.as_object()
}

/// A job naming secrets needs a secrets store, a known submitter, and every path present
/// in the submitter's secrets (the agent gets the submitter's values).
async fn check_secrets(app: &App, identity: &Identity, job: &ValidJob) -> Result<(), ApiError> {
    let Some(secrets) = secret_paths(&job.data) else {
        return Ok(());
    };
    let refuse = |message: String| Err(ApiError::json(StatusCode::UNPROCESSABLE_ENTITY, message));
    if !app.store.has_secrets_store() {
        return refuse("No secrets store".into());
    }
    let Some(client_id) = &identity.client_id else {
        return refuse("Missing client ID (user not authenticated)".into());
    };
    let paths = secrets
        .values()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let mut missing = app.store.missing_secrets(client_id, paths).await?;
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        return refuse(format!("Inaccessible secret paths: {}", missing.join(", ")));
    }
    Ok(())
}

/// Puts the values of a claimed job's secrets in place of their paths, for the agent
/// only (nothing else ever sees them); unreadable ones become "".
async fn resolve_secrets(app: &App, job: &mut Map<String, Value>, owner: Option<&str>) {
    let Some(paths) = secret_paths(job).cloned() else {
        return;
    };
    let mut values = Map::new();
    for (name, path) in paths {
        let value = match (owner, path.as_str()) {
            (Some(owner), Some(path)) => match app.store.take_secret(owner, path).await {
                Ok(value) => value.unwrap_or_default(),
                // The job is already claimed: it runs, without this secret.
                Err(error) => {
                    tracing::warn!("cannot read secret {path} of {owner}: {error}");
                    String::new()
                }
            },
            _ => String::new(),
        };
        values.insert(name, Value::String(value));
    }
    if let Some(test_data) = job.get_mut("test_data").and_then(Value::as_object_mut) {
        test_data.insert("secrets".into(), Value::Object(values));
    }
}

/// `GET /v1/job?queue=…[&wait=…]`: an agent takes the next job of its queues.
pub async fn claim(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Arc<Identity>>,
    query: QueryPairs,
    AgentCookie(agent): AgentCookie,
) -> ApiResult {
    let mut queues: Vec<String> = query.all("queue").map(str::to_string).collect();
    queues.sort();
    queues.dedup();
    if queues.is_empty() {
        return Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            "No queue(s) specified in request",
        ));
    }
    if queues.len() > MAX_CLAIM_QUEUES {
        return Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            format!("Too many queues in one request (at most {MAX_CLAIM_QUEUES})"),
        ));
    }
    for queue in &queues {
        reply::check_name(NameKind::Queue, queue)?;
    }
    let agent = match agent {
        Some(agent) => {
            reply::check_name(NameKind::Agent, &agent)?;
            agent
        }
        // Agents from before 2023 never say who they are: no `exclude_agents` names them.
        None if app.config.tokenless_agents => String::new(),
        None => {
            return Err(ApiError::json(
                StatusCode::UNAUTHORIZED,
                "Agent not identified",
            ))
        }
    };
    let wait = wait_parameter(&query)?;
    let Some(claimed) = app.store.claim_job(&queues, &agent, wait).await? else {
        return Ok(reply::no_content());
    };
    app.metrics.job_claimed();
    let mut job = claimed.data;
    // As the reference, the job carries its submitter only when it names secrets.
    let secrets_owner = claimed.submitter.filter(|_| secret_paths(&job).is_some());
    // Secret values go only to agents with credentials: with `tokenless_agents`, anyone
    // on the network could claim, so tokenless claims get the names with empty values.
    let owner = secrets_owner
        .as_deref()
        .filter(|_| caller.client_id.is_some());
    resolve_secrets(&app, &mut job, owner).await;
    job.insert("job_id".into(), Value::String(claimed.job_id));
    job.insert(
        "started_at".into(),
        Value::String(time::render(claimed.started_at)),
    );
    if let Some(status) = claimed.attachments {
        job.insert("attachments_status".into(), Value::String(status));
    }
    if let Some(client_id) = secrets_owner {
        job.insert("client_id".into(), Value::String(client_id));
    }
    Ok(reply::json(&Value::Object(job)))
}

/// `GET /v1/job/<id>`: the job definition as submitted (validated and coerced).
pub async fn show(State(app): State<Arc<App>>, Path(job_id): Path<String>) -> ApiResult {
    check_job_id(&job_id)?;
    let Some(mut data) = app.store.job_definition(&job_id).await? else {
        return Ok(reply::no_content());
    };
    data.insert("job_id".into(), Value::String(job_id));
    Ok(reply::json(&Value::Object(data)))
}

const SEARCH_STATES: [&str; 11] = [
    "setup",
    "provision",
    "firmware_update",
    "test",
    "allocate",
    "allocated",
    "reserve",
    "cleanup",
    "cancelled",
    "completed",
    "active",
];

/// `GET /v1/job/search?tags=…&match=any|all&state=…[&limit=…&offset=…]`
pub async fn search(State(app): State<Arc<App>>, query: QueryPairs) -> ApiResult {
    let mut errors = Map::new();
    for unknown in query.unknown(&["tags", "match", "state", "limit", "offset"]) {
        errors.insert(unknown.to_string(), json!(["Unknown field."]));
    }
    let states: Vec<String> = query.all("state").map(str::to_string).collect();
    let bad_states: Map<String, Value> = states
        .iter()
        .enumerate()
        .filter(|(_, state)| !SEARCH_STATES.contains(&state.as_str()))
        .map(|(index, _)| {
            let message = format!("Must be one of: {}.", SEARCH_STATES.join(", "));
            (index.to_string(), json!([message]))
        })
        .collect();
    if !bad_states.is_empty() {
        errors.insert("state".into(), Value::Object(bad_states));
    }
    let match_all = match query.last("match") {
        None | Some("any") => false,
        Some("all") => true,
        Some(_) => {
            errors.insert("match".into(), json!(["Must be one of: any, all."]));
            false
        }
    };
    let mut number = |name: &str| match query.last(name).map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            errors.insert(name.to_string(), json!(["Not a valid integer."]));
            None
        }
    };
    let (limit, offset) = (number("limit"), number("offset"));
    if !errors.is_empty() {
        return Err(ApiError::invalid_query(Value::Object(errors)));
    }
    let filter = JobFilter {
        tags: query.all("tags").map(str::to_string).collect(),
        match_all_tags: match_all,
        active: states.iter().any(|s| s == "active"),
        states,
        limit,
        offset: offset.unwrap_or(0),
        ..JobFilter::default()
    };
    let jobs = app.store.search_jobs(filter).await?;
    let listing: Vec<Value> = jobs
        .into_iter()
        .map(|job| {
            json!({"job_id": job.job_id, "created_at": time::render(job.created_at), "job_state": job.state})
        })
        .collect();
    Ok(reply::json(&Value::Array(listing)))
}

/// `POST /v1/job/<id>/action` with `{"action": "cancel"}`.
pub async fn action(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    validate_body(&body, BodySchema::Action).map_err(ApiError::invalid_body)?;
    check_job_id_text(&job_id)?;
    if app.store.cancel_job(&job_id).await? {
        Ok(reply::ok_text())
    } else {
        Err(ApiError::text(
            StatusCode::BAD_REQUEST,
            "The job is already completed or cancelled",
        ))
    }
}

/// `GET /v1/job/<id>/position`: how many waiting jobs of the queue go first.
pub async fn position(State(app): State<Arc<App>>, Path(job_id): Path<String>) -> ApiResult {
    check_job_id(&job_id)?;
    match app.store.queue_position(&job_id).await? {
        Some(position) => Ok(reply::text(StatusCode::OK, position.to_string())),
        None => Err(ApiError::text(
            StatusCode::GONE,
            "Job not found or already started\n",
        )),
    }
}

/// The answer to a job that takes no archive (any more).
fn gate_refusal(job_id: &str, gate: AttachmentGate) -> ApiError {
    let message = match gate {
        AttachmentGate::NotExpected => format!("Job {job_id} not awaiting attachments\n"),
        _ => format!("Job {job_id} is not valid\n"),
    };
    ApiError::text(StatusCode::UNPROCESSABLE_ENTITY, message)
}

/// `POST /v1/job/<id>/attachments`: the client's archive; releases the job. A job
/// submitted with a token takes it from that client (or an admin) only; the first
/// archive wins, and a different later one is refused rather than silently dropped.
pub async fn upload_attachments(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Arc<Identity>>,
    Path(job_id): Path<String>,
    request: Request<Body>,
) -> ApiResult {
    check_job_id_text(&job_id)?;
    let gate = app.store.attachment_gate(&job_id).await?;
    if let Some(submitter) = gate.submitter() {
        if caller.client_id.as_deref() != Some(submitter) && caller.role != Role::Admin {
            return Err(ApiError::json(StatusCode::FORBIDDEN, match caller.client_id {
                // testflinger-cli from September 2025 to June 2026 submits with its token
                // but uploads without it.
                None => format!("Job {job_id} was submitted with a token: upload its attachments with the same token (testflinger-cli before July 2026 uploads without one: upgrade it, or submit without credentials)"),
                Some(_) => format!("Job {job_id} was submitted by another client: only it or an admin may upload its attachments"),
            }));
        }
    }
    if !matches!(
        gate,
        AttachmentGate::Open { .. } | AttachmentGate::AlreadyComplete { .. }
    ) {
        return Err(gate_refusal(&job_id, gate));
    }
    let blob = receive_file(&app, request).await?;
    match app.store.complete_attachments(&job_id, blob).await? {
        AttachmentReceipt::Stored => Ok(reply::ok_text()),
        AttachmentReceipt::AlreadyStored { identical: true } => {
            Ok(reply::text(StatusCode::OK, "OK (already received)"))
        }
        AttachmentReceipt::AlreadyStored { identical: false } => Err(ApiError::text(
            StatusCode::CONFLICT,
            format!("Job {job_id} already has different attachments; the first upload stays\n"),
        )),
        AttachmentReceipt::Refused(gate) => Err(gate_refusal(&job_id, gate)),
    }
}

/// `GET /v1/job/<id>/attachments`: the agent downloads the archive.
pub async fn download_attachments(
    State(app): State<Arc<App>>,
    Path(job_id): Path<String>,
) -> ApiResult {
    check_job_id_text(&job_id)?;
    send_blob(
        &app,
        &job_id,
        BlobKind::Attachments,
        &[(header::CONTENT_TYPE, "application/gzip")],
    )
    .await
}

/// Streams a stored archive, or answers 204 when there is none.
pub async fn send_blob(
    app: &App,
    job_id: &str,
    kind: BlobKind,
    headers: &[(header::HeaderName, &'static str)],
) -> ApiResult {
    let Some(path) = app.store.blob_path(job_id, kind).await? else {
        return Ok(reply::no_content());
    };
    // Expiry may delete the file between the lookup and the open.
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return Ok(reply::no_content());
    };
    let length = file
        .metadata()
        .await
        .map(|m| m.len())
        .map_err(StoreError::from)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = (StatusCode::OK, body).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name.clone(), header::HeaderValue::from_static(value));
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, length.into());
    Ok(response)
}
