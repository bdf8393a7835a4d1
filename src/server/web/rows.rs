//! The job and agent rows that several pages list.

use serde_json::Value;

use super::format;
use crate::job::time::Micros;
use crate::job::Outcome;
use crate::store::{AgentFields, JobSummary};

/// An agent that has not reported for this long is marked stale: agents report at least
/// every polling interval, so it is likely down.
const STALE_AFTER: Micros = 10 * 60 * 1_000_000;

pub struct JobRow {
    pub id: String,
    pub queue: String,
    pub state: String,
    pub state_class: &'static str,
    /// How it ended; `None` while it runs.
    pub outcome: Option<Outcome>,
    pub outcome_class: &'static str,
    pub created: String,
}

impl From<JobSummary> for JobRow {
    fn from(job: JobSummary) -> Self {
        JobRow {
            outcome: job.outcome,
            outcome_class: format::outcome_class(job.outcome),
            state_class: format::state_class(&job.state),
            created: format::when(job.created_at),
            id: job.job_id,
            queue: job.queue,
            state: job.state,
        }
    }
}

pub struct AgentRow {
    pub name: String,
    pub location: String,
    pub state: String,
    pub state_class: &'static str,
    pub comment: String,
    pub queues: String,
    pub job_id: String,
    pub last_seen: String,
    pub stale: bool,
    /// "3 passed" / "2 failed": the current provisioning streak.
    pub streak: String,
    pub streak_class: &'static str,
}

/// A reported string field, or "".
pub fn text(agent: &AgentFields, key: &str) -> String {
    match agent.fields.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The queues an agent serves.
pub fn queues(agent: &AgentFields) -> Vec<String> {
    agent
        .fields
        .get("queues")
        .and_then(Value::as_array)
        .map(|queues| {
            queues
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the agent has gone quiet (offline agents are shown as such instead).
pub fn is_stale(agent: &AgentFields, now: Micros) -> bool {
    now - agent.updated_at > STALE_AFTER && text(agent, "state") != "offline"
}

impl AgentRow {
    pub fn new(agent: &AgentFields, now: Micros) -> AgentRow {
        let state = text(agent, "state");
        let (streak, streak_class) = match (
            text(agent, "provision_streak_type").as_str(),
            agent
                .fields
                .get("provision_streak_count")
                .and_then(Value::as_i64),
        ) {
            ("pass", Some(count)) => (format!("{count} passed"), "ok"),
            ("fail", Some(count)) => (format!("{count} failed"), "bad"),
            _ => (String::new(), "idle"),
        };
        AgentRow {
            name: agent.name.clone(),
            location: text(agent, "location"),
            state_class: format::state_class(&state),
            state,
            comment: text(agent, "comment"),
            queues: queues(agent).join(", "),
            job_id: text(agent, "job_id"),
            last_seen: format::ago(agent.updated_at, now),
            stale: is_stale(agent, now),
            streak,
            streak_class,
        }
    }
}
