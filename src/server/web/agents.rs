//! `/agents` (every agent, the quiet ones marked) and `/agents/<name>` (its state, recent
//! jobs, provision history and log).

use std::sync::Arc;

use super::format;
use super::page::{render, PageError, PageResult};
use super::rows::{self, AgentRow, JobRow};
use crate::job::time;
use crate::server::app::App;
use askama::Template;
use axum::extract::{Path, State};

const RECENT_JOBS: u32 = 20;

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    agents: Vec<AgentRow>,
}

pub async fn list(State(app): State<Arc<App>>) -> PageResult {
    let now = time::now();
    let mut agents: Vec<AgentRow> = app
        .store
        .agents()
        .await?
        .iter()
        .map(|agent| AgentRow::new(agent, now))
        .collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(render(&AgentsPage { agents }))
}

struct Attempt {
    when: String,
    job_id: String,
    exit_code: i64,
    class: &'static str,
    detail: String,
}

#[derive(Template)]
#[template(path = "agent.html")]
struct AgentPage {
    name: String,
    state: String,
    state_class: &'static str,
    stale: bool,
    comment: String,
    location: String,
    provision_type: String,
    last_seen: String,
    queues: Vec<String>,
    jobs: Vec<JobRow>,
    success_rate: String,
    provisions: Vec<Attempt>,
    log: Vec<String>,
}

pub async fn page(State(app): State<Arc<App>>, Path(name): Path<String>) -> PageResult {
    let Some(agent) = app.store.agent(&name).await? else {
        return Err(PageError::NotFound(format!("Agent not found: {name}")));
    };
    let now = time::now();
    let jobs = app.store.agent_jobs(&name, RECENT_JOBS).await?;
    let history = app.store.provision_history(&name).await?;
    let log = app.store.agent_log(&name).await?;
    let passed = history.iter().filter(|a| a.exit_code == 0).count();
    let success_rate = if history.is_empty() {
        String::new()
    } else {
        format!(
            "{}% of the last {} passed",
            passed * 100 / history.len(),
            history.len()
        )
    };
    let state = rows::text(&agent, "state");
    let page = AgentPage {
        state_class: format::state_class(&state),
        state,
        stale: rows::is_stale(&agent, now),
        comment: rows::text(&agent, "comment"),
        location: rows::text(&agent, "location"),
        provision_type: rows::text(&agent, "provision_type"),
        last_seen: format!(
            "{} ({})",
            format::when(agent.updated_at),
            format::ago(agent.updated_at, now)
        ),
        queues: rows::queues(&agent),
        jobs: jobs.into_iter().map(JobRow::from).collect(),
        success_rate,
        provisions: history
            .into_iter()
            .map(|attempt| Attempt {
                when: format::when(attempt.timestamp),
                class: if attempt.exit_code == 0 { "ok" } else { "bad" },
                job_id: attempt.job_id,
                exit_code: attempt.exit_code,
                detail: attempt.detail.unwrap_or_default(),
            })
            .collect(),
        log,
        name: agent.name,
    };
    Ok(render(&page))
}
