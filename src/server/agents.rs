//! Agent handlers: what agents report about themselves, their provision history, and
//! the queues and images they advertise.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::app::App;
use super::extract::JsonBody;
use super::reply::{self, ApiError, ApiResult};
use crate::job::names::NameKind;
use crate::job::time;
use crate::job::validate::{validate_body, BodySchema};
use crate::store::{AgentFields, ProvisionLogEntry};

/// An agent as `GET /v1/agents/data` shows it: every stored field, `updated_at`, and
/// `restricted_to` (its restricted queues that have owners, with the owners), given the
/// lab's restricted queues.
fn agent_document(agent: AgentFields, restricted: &[(String, Vec<String>)]) -> Value {
    let serves = |queue: &str| {
        agent
            .fields
            .get("queues")
            .and_then(Value::as_array)
            .is_some_and(|queues| queues.iter().any(|q| q.as_str() == Some(queue)))
    };
    let restricted_to: Map<String, Value> = restricted
        .iter()
        .filter(|(queue, owners)| !owners.is_empty() && serves(queue))
        .map(|(queue, owners)| (queue.clone(), json!(owners)))
        .collect();
    let mut document = agent.fields;
    document.insert("name".into(), Value::String(agent.name));
    document.insert(
        "updated_at".into(),
        Value::String(time::render(agent.updated_at)),
    );
    document.insert("restricted_to".into(), Value::Object(restricted_to));
    Value::Object(document)
}

/// `POST /v1/agents/data/<name>`: an agent's heartbeat and state report. Sets the
/// `agent_name` cookie that `GET /v1/job` needs.
pub async fn report(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let mut fields =
        validate_body(&body, BodySchema::AgentReport).map_err(ApiError::invalid_body)?;
    reply::check_name(NameKind::Agent, &name)?;
    if !is_cookie_safe(&name) {
        return Err(ApiError::json(
            StatusCode::BAD_REQUEST,
            format!("Invalid agent name '{name}': use letters, digits and -_.:@+~ only"),
        ));
    }
    let log = match fields.remove("log") {
        Some(Value::Array(lines)) => lines
            .into_iter()
            .filter_map(|line| line.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    app.store.report_agent(&name, fields, log).await?;
    let mut response = reply::json(&json!({"status": "OK"}));
    let cookie = format!("agent_name={name}; HttpOnly; Path=/; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// An agent's name travels back in the `agent_name` cookie, so it must not need quoting
/// (a `;` would cut it short and identify the agent under another name).
fn is_cookie_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@+~".contains(&b))
}

/// `GET /v1/agents/data`
pub async fn list(State(app): State<Arc<App>>) -> ApiResult {
    let mut documents = Vec::new();
    let restricted = app.store.restricted_queues().await?;
    for agent in app.store.agents().await? {
        documents.push(agent_document(agent, &restricted));
    }
    Ok(reply::json(&Value::Array(documents)))
}

/// `GET /v1/agents/data/<name>`: unknown agents are a 404 with body `{}`.
pub async fn show(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    match app.store.agent(&name).await? {
        Some(agent) => {
            let restricted = app.store.restricted_queues().await?;
            Ok(reply::json(&agent_document(agent, &restricted)))
        }
        None => Ok(reply::json_body(StatusCode::NOT_FOUND, &json!({}))),
    }
}

/// `POST /v1/agents/provision_logs/<name>`
pub async fn provision_log(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult {
    let entry = validate_body(&body, BodySchema::ProvisionLog).map_err(ApiError::invalid_body)?;
    reply::check_name(NameKind::Agent, &name)?;
    let entry = ProvisionLogEntry {
        job_id: entry["job_id"].as_str().unwrap_or_default().to_string(),
        exit_code: entry["exit_code"].as_i64().unwrap_or_default(),
        detail: entry
            .get("detail")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    if app.store.record_provision(&name, entry).await? {
        Ok(reply::ok_text())
    } else {
        Err(ApiError::text(StatusCode::NOT_FOUND, "Agent not found\n"))
    }
}

/// `POST /v1/agents/stop_waiting/<name>` (tf's addition): the agent's claim that waits
/// for a job (`GET /v1/job?wait=…`) answers at once, with no job. A stopping agent asks
/// this rather than drop its claim, whose answer might be carrying a job.
pub async fn stop_waiting(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    reply::check_name(NameKind::Agent, &name)?;
    app.store.stop_waiting(&name);
    Ok(reply::ok_text())
}

/// `GET /v1/agents/queues`: `{queue: description}`.
pub async fn queues(State(app): State<Arc<App>>) -> ApiResult {
    let descriptions = app.store.queue_descriptions().await?;
    Ok(reply::json(&json!(descriptions)))
}

fn schema_error(message: String) -> ApiError {
    ApiError::invalid_body(json!({"_schema": [message]}))
}

/// `POST /v1/agents/queues` with `{queue: description}`.
pub async fn advertise_queues(State(app): State<Arc<App>>, JsonBody(body): JsonBody) -> ApiResult {
    let Value::Object(entries) = body else {
        return Err(schema_error("Invalid input type.".into()));
    };
    let mut queues = BTreeMap::new();
    for (name, description) in entries {
        if name.is_empty() {
            return Err(schema_error("Queue names must be non-empty strings".into()));
        }
        reply::check_name(NameKind::Queue, &name)?;
        let Value::String(description) = description else {
            return Err(schema_error(format!(
                "Description for queue '{name}' must be a string"
            )));
        };
        reply::check_name(NameKind::Label, &description)?;
        queues.insert(name, description);
    }
    app.store.advertise_queues(queues).await?;
    Ok(reply::ok_text())
}

/// `GET /v1/agents/images/<queue>`: `{image: provision data}`.
pub async fn images(State(app): State<Arc<App>>, Path(queue): Path<String>) -> ApiResult {
    Ok(reply::json(&Value::Object(app.store.images(&queue).await?)))
}

/// `POST /v1/agents/images` with `{queue: {image: provision data}}`; each queue's list
/// is replaced.
pub async fn set_images(State(app): State<Arc<App>>, JsonBody(body): JsonBody) -> ApiResult {
    let Value::Object(queues) = body else {
        return Err(schema_error("Invalid input type.".into()));
    };
    let mut images = BTreeMap::new();
    for (queue, list) in queues {
        reply::check_name(NameKind::Queue, &queue)?;
        let Value::Object(list) = list else {
            return Err(schema_error(format!(
                "Images for queue '{queue}' must be a mapping"
            )));
        };
        for (image, provision_data) in &list {
            if image.is_empty() || image.starts_with('$') || image.contains(['.', '\0']) {
                return Err(schema_error(format!("Invalid image name '{image}'")));
            }
            reply::check_name(NameKind::Label, image)?;
            if !provision_data.is_string() {
                return Err(schema_error(format!(
                    "Provision data for image '{image}' must be a string"
                )));
            }
        }
        images.insert(queue, list);
    }
    app.store.set_images(images).await?;
    Ok(reply::ok_text())
}

/// The seven fields `GET /v1/queues/<q>/agents` shows of each agent.
const AGENT_SUMMARY_FIELDS: [&str; 6] = [
    "state",
    "queues",
    "location",
    "provision_type",
    "job_id",
    "comment",
];

/// `GET /v1/queues/<queue>/agents`
pub async fn queue_agents(State(app): State<Arc<App>>, Path(queue): Path<String>) -> ApiResult {
    let agents = app.store.agents_on_queue(&queue).await?;
    // Agents from before 2023 never register, but may advertise their queues: such a
    // queue exists, with no agent to show (clients then warn that none is online).
    if agents.is_empty() && !app.store.queue_descriptions().await?.contains_key(&queue) {
        return Err(ApiError::json(
            StatusCode::NOT_FOUND,
            format!("Queue '{queue}' does not exist."),
        ));
    }
    let summaries: Vec<Value> = agents
        .into_iter()
        .map(|agent| {
            let mut summary: Map<String, Value> = AGENT_SUMMARY_FIELDS
                .iter()
                .filter_map(|field| {
                    agent
                        .fields
                        .get(*field)
                        .map(|v| (field.to_string(), v.clone()))
                })
                .collect();
            summary.insert("name".into(), Value::String(agent.name));
            Value::Object(summary)
        })
        .collect();
    Ok(reply::json(&Value::Array(summaries)))
}
