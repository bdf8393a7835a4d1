//! `/jobs` (search, newest first, paged), `/jobs/<id>` (everything about one job, its
//! logs following live) and the cancel button's `POST /jobs/<id>/cancel`.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use serde_json::{Map, Value};

use super::format;
use super::page::{render, PageError, PageResult};
use super::rows::JobRow;
use crate::job::{is_valid_job_id, JobState, Outcome, Phase};
use crate::server::app::App;
use crate::store::JobFilter;

const PAGE_SIZE: u64 = 50;

/// How much of each log a job's page shows at first: its end. The API has all of it.
const SHOWN_LOG_BYTES: usize = 2 << 20;

/// Every state a job can be in, for the search form: waiting, each phase, and the ends.
fn job_states() -> Vec<&'static str> {
    let mut states = vec!["waiting"];
    states.extend(Phase::NAMES);
    states.extend(["allocated", "running"]);
    states.extend(JobState::FINISHED_NAMES);
    states
}

/// The search form's fields, echoed back into it.
#[derive(Default)]
pub struct Search {
    pub state: String,
    pub queue: String,
    pub tag: String,
    pub id: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    states: Vec<&'static str>,
    filter: Search,
    problem: String,
    jobs: Vec<JobRow>,
    previous_page: String,
    next_page: String,
}

pub async fn list(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let field = |name: &str| {
        query
            .get(name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let search = Search {
        state: field("state"),
        queue: field("queue"),
        tag: field("tag"),
        id: field("id").to_ascii_lowercase(),
    };
    let offset: u64 = field("offset").parse().unwrap_or(0);
    let mut problem = String::new();
    let id_is_plain =
        search.id.len() <= 36 && search.id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let jobs = if id_is_plain {
        let non_empty = |text: &String| (!text.is_empty()).then(|| text.clone());
        let filter = JobFilter {
            states: non_empty(&search.state).into_iter().collect(),
            tags: non_empty(&search.tag).into_iter().collect(),
            queue: non_empty(&search.queue),
            id_prefix: non_empty(&search.id),
            newest_first: true,
            // One more than shown tells whether there is a next page.
            limit: Some(PAGE_SIZE + 1),
            offset,
            ..JobFilter::default()
        };
        app.store.search_jobs(filter).await?
    } else {
        problem = "Job ids hold only hexadecimal digits and dashes.".into();
        Vec::new()
    };
    let more = jobs.len() as u64 > PAGE_SIZE;
    let page_link = |offset: u64| {
        let mut link = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("state", &search.state),
            ("queue", &search.queue),
            ("tag", &search.tag),
            ("id", &search.id),
        ] {
            if !value.is_empty() {
                link.append_pair(name, value);
            }
        }
        link.append_pair("offset", &offset.to_string());
        format!("/jobs?{}", link.finish())
    };
    let page = JobsPage {
        states: job_states(),
        problem,
        jobs: jobs
            .into_iter()
            .take(PAGE_SIZE as usize)
            .map(JobRow::from)
            .collect(),
        previous_page: if offset > 0 {
            page_link(offset.saturating_sub(PAGE_SIZE))
        } else {
            String::new()
        },
        next_page: if more {
            page_link(offset + PAGE_SIZE)
        } else {
            String::new()
        },
        filter: search,
    };
    Ok(render(&page))
}

struct TimelineRow {
    phase: String,
    started: String,
    took: String,
    exit_status: String,
    class: &'static str,
}

struct LogBlock {
    phase: String,
    text: String,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    id: String,
    queue: String,
    state: String,
    state_class: &'static str,
    created: String,
    started: String,
    ended: bool,
    /// How it ended; `None` while it runs.
    outcome: Option<Outcome>,
    outcome_class: &'static str,
    /// The agent running (or that ran) it; empty before one took it.
    agent: String,
    has_artifact: bool,
    device_facts: Vec<(String, String)>,
    timeline: Vec<TimelineRow>,
    output: Vec<LogBlock>,
    serial: Vec<LogBlock>,
    next_output: i64,
    next_serial: i64,
    output_cut: bool,
    serial_cut: bool,
    definition: String,
}

fn not_found(job_id: &str) -> PageError {
    PageError::NotFound(format!("Job not found: {job_id}"))
}

pub async fn page(State(app): State<Arc<App>>, Path(job_id): Path<String>) -> PageResult {
    if !is_valid_job_id(&job_id) {
        return Err(not_found(&job_id));
    }
    let Some(job) = app.store.job_record(&job_id).await? else {
        return Err(not_found(&job_id));
    };
    let spans = app.store.phase_spans(&job_id).await?;
    let logs = app.store.logs_so_far(&job_id, SHOWN_LOG_BYTES).await?;
    let ended = JobState::is_finished_name(&job.state);

    // A phase took from its first line to the next phase's first line (or its own last).
    let mut timeline: Vec<TimelineRow> = spans
        .iter()
        .enumerate()
        .map(|(index, span)| {
            let until = spans.get(index + 1).map_or(span.last, |next| next.first);
            let (exit_status, class) = exit_status(job.status.get(&span.phase), ended);
            TimelineRow {
                phase: span.phase.clone(),
                started: format::when(span.first),
                took: format::duration((until - span.first) / 1_000_000),
                exit_status,
                class,
            }
        })
        .collect();
    for (phase, code) in &job.status {
        if !spans.iter().any(|span| &span.phase == phase) {
            let (exit_status, class) = exit_status(Some(code), ended);
            timeline.push(TimelineRow {
                phase: phase.clone(),
                started: String::new(),
                took: String::new(),
                exit_status,
                class,
            });
        }
    }

    let blocks = |wanted: &str| -> Vec<LogBlock> {
        logs.texts
            .iter()
            .filter(|(log_type, _, _)| log_type == wanted)
            .map(|(_, phase, text)| LogBlock {
                phase: phase.clone(),
                text: text.clone(),
            })
            .collect()
    };
    let device_info = match &job.device_info {
        Some(Value::Object(info)) => info.clone(),
        _ => Map::new(),
    };
    let agent = job
        .agent
        .clone()
        .or_else(|| device_info.get("agent_name")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let page = JobPage {
        state_class: format::state_class(&job.state),
        created: format::when(job.created_at),
        started: job.started_at.map(format::when).unwrap_or_default(),
        ended,
        outcome: job.outcome,
        outcome_class: format::outcome_class(job.outcome),
        agent,
        has_artifact: job.has_artifact,
        device_facts: device_facts(device_info),
        timeline,
        output: blocks("output"),
        serial: blocks("serial"),
        output_cut: logs.cut.iter().any(|kind| kind == "output"),
        serial_cut: logs.cut.iter().any(|kind| kind == "serial"),
        next_output: logs.next_fragment.get("output").copied().unwrap_or(0),
        next_serial: logs.next_fragment.get("serial").copied().unwrap_or(0),
        definition: as_submitted(job.definition),
        id: job.job_id,
        queue: job.queue,
        state: job.state,
    };
    Ok(render(&page))
}

/// The device facts the connector reported (`device-info.json`), under labels. The agent
/// is left out: the page names it already.
fn device_facts(info: Map<String, Value>) -> Vec<(String, String)> {
    info.into_iter()
        .filter(|(key, value)| key != "agent_name" && !value.is_object() && !value.is_array())
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            (fact_label(&key), text)
        })
        .collect()
}

/// `device_ip` → `Device IP`, `serial_port` → `Serial port`.
fn fact_label(key: &str) -> String {
    const ACRONYMS: [&str; 5] = ["ip", "mac", "id", "url", "ssh"];
    let words: Vec<String> = key
        .split('_')
        .filter(|word| !word.is_empty())
        .map(|word| {
            if ACRONYMS.contains(&word.to_ascii_lowercase().as_str()) {
                word.to_ascii_uppercase()
            } else {
                word.to_string()
            }
        })
        .collect();
    let text = words.join(" ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// The stored definition as the submitter wrote it, as YAML: in the schema's order (fields
/// it does not know follow by name), and without the empty `exclude_agents` the server
/// adds to every job.
fn as_submitted(mut definition: Map<String, Value>) -> String {
    if definition
        .get("exclude_agents")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        definition.remove("exclude_agents");
    }
    let mut ordered = serde_yaml::Mapping::new();
    for key in crate::job::validate::job_fields() {
        if let Some(value) = definition.remove(key) {
            ordered.insert(key.into(), serde_yaml::to_value(value).unwrap_or_default());
        }
    }
    for (key, value) in definition {
        ordered.insert(key.into(), serde_yaml::to_value(value).unwrap_or_default());
    }
    serde_yaml::to_string(&ordered).unwrap_or_default()
}

/// A phase's exit status as shown, and its colour: a phase without one is still running,
/// unless the job ended (cancelled mid-phase).
fn exit_status(code: Option<&Value>, job_ended: bool) -> (String, &'static str) {
    match code.and_then(Value::as_i64) {
        Some(0) => ("0".into(), "ok"),
        Some(code) => (code.to_string(), "bad"),
        None if job_ended => ("none".into(), "idle"),
        None => ("running".into(), "busy"),
    }
}

/// The cancel button: the same permission as `POST /v1/job/<id>/action`, which any
/// caller, anonymous included, has (forms from other sites are refused for every route,
/// in `csrf`). Back to the job's page either way.
pub async fn cancel(State(app): State<Arc<App>>, Path(job_id): Path<String>) -> PageResult {
    if !is_valid_job_id(&job_id) {
        return Err(not_found(&job_id));
    }
    if app.store.job_record(&job_id).await?.is_none() {
        return Err(not_found(&job_id));
    }
    app.store.cancel_job(&job_id).await?;
    Ok(Redirect::to(&format!("/jobs/{job_id}")).into_response())
}
