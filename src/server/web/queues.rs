//! `/` (the lab at a glance), `/queues` (every queue with its load and wait times) and
//! `/queues/<name>` (its unfinished jobs, its agents, its wait-time percentiles).

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};

use super::format;
use super::page::{render, PageResult};
use super::rows::{self, AgentRow, JobRow};
use crate::job::time;
use crate::job::JobState;
use crate::server::app::App;
use crate::server::queues::percentiles;
use crate::store::JobFilter;

/// How many queues the overview lists.
const BUSIEST: usize = 10;

/// How many unfinished jobs a queue's page lists, oldest first.
const SHOWN_JOBS: u64 = 200;

struct Count {
    name: String,
    class: &'static str,
    count: u64,
}

/// Waiting and running (any other unfinished state) jobs of a queue.
#[derive(Default, Clone, Copy)]
struct Load {
    waiting: u64,
    running: u64,
}

/// The load of every queue that has jobs.
fn loads(counts: &[(String, String, u64)]) -> BTreeMap<String, Load> {
    let mut loads: BTreeMap<String, Load> = BTreeMap::new();
    for (queue, state, count) in counts {
        let load = loads.entry(queue.clone()).or_default();
        if state == "waiting" {
            load.waiting += count;
        } else if !JobState::is_finished_name(state) {
            load.running += count;
        }
    }
    loads
}

/// Counts per name, largest first.
fn counts(tally: BTreeMap<String, u64>) -> Vec<Count> {
    let mut counts: Vec<Count> = tally
        .into_iter()
        .map(|(name, count)| Count {
            class: format::state_class(&name),
            name,
            count,
        })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    counts
}

struct QueueLoad {
    name: String,
    waiting: u64,
    running: u64,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    job_states: Vec<Count>,
    agent_states: Vec<Count>,
    queues: Vec<QueueLoad>,
}

pub async fn overview(State(app): State<Arc<App>>) -> PageResult {
    let job_counts = app.store.job_counts().await?;
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    for (_, state, count) in &job_counts {
        *by_state.entry(state.clone()).or_default() += count;
    }
    let mut agents_by_state: BTreeMap<String, u64> = BTreeMap::new();
    for agent in app.store.agents().await? {
        *agents_by_state
            .entry(rows::text(&agent, "state"))
            .or_default() += 1;
    }
    let mut queues: Vec<QueueLoad> = loads(&job_counts)
        .into_iter()
        .filter(|(_, load)| load.waiting + load.running > 0)
        .map(|(name, load)| QueueLoad {
            name,
            waiting: load.waiting,
            running: load.running,
        })
        .collect();
    queues.sort_by_key(|queue| std::cmp::Reverse(queue.waiting + queue.running));
    queues.truncate(BUSIEST);
    Ok(render(&Overview {
        job_states: counts(by_state),
        agent_states: counts(agents_by_state),
        queues,
    }))
}

struct QueueRow {
    name: String,
    description: String,
    waiting: u64,
    running: u64,
    agents: usize,
    wait: String,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    queues: Vec<QueueRow>,
}

/// A percentile in seconds, as a length of time.
fn seconds_text(value: &serde_json::Value) -> String {
    value
        .as_f64()
        .map(|seconds| format::duration(seconds.round() as i64))
        .unwrap_or_default()
}

pub async fn list(State(app): State<Arc<App>>) -> PageResult {
    let loads = loads(&app.store.job_counts().await?);
    let descriptions = app.store.queue_descriptions().await?;
    let agents = app.store.agents().await?;
    let waits = app.store.wait_times(Vec::new()).await?;
    // Every queue anyone knows of: advertised, served by an agent, or holding jobs.
    let mut names: Vec<String> = descriptions.keys().cloned().collect();
    names.extend(agents.iter().flat_map(rows::queues));
    names.extend(loads.keys().cloned());
    names.sort();
    names.dedup();
    let queues = names
        .into_iter()
        .map(|name| {
            let load = loads.get(&name).copied().unwrap_or_default();
            let wait = waits
                .get(&name)
                .map(|samples| {
                    let table = percentiles(samples);
                    format!(
                        "{} / {}",
                        seconds_text(&table["50"]),
                        seconds_text(&table["90"])
                    )
                })
                .unwrap_or_default();
            QueueRow {
                description: descriptions.get(&name).cloned().unwrap_or_default(),
                waiting: load.waiting,
                running: load.running,
                agents: agents
                    .iter()
                    .filter(|agent| rows::queues(agent).contains(&name))
                    .count(),
                wait,
                name,
            }
        })
        .collect();
    Ok(render(&QueuesPage { queues }))
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    name: String,
    description: String,
    percentiles: Vec<(String, String)>,
    jobs: Vec<JobRow>,
    agents: Vec<AgentRow>,
}

pub async fn page(State(app): State<Arc<App>>, Path(name): Path<String>) -> PageResult {
    let now = time::now();
    let description = app
        .store
        .queue_descriptions()
        .await?
        .remove(&name)
        .unwrap_or_else(|| "No description".into());
    let unfinished = JobFilter {
        queue: Some(name.clone()),
        active: true,
        limit: Some(SHOWN_JOBS),
        ..JobFilter::default()
    };
    let jobs = app
        .store
        .search_jobs(unfinished)
        .await?
        .into_iter()
        .map(JobRow::from)
        .collect();
    let agents = app
        .store
        .agents_on_queue(&name)
        .await?
        .iter()
        .map(|agent| AgentRow::new(agent, now))
        .collect();
    let samples = app.store.wait_times(vec![name.clone()]).await?;
    let table = percentiles(samples.get(&name).map_or(&[][..], Vec::as_slice));
    let percentiles = ["5", "10", "50", "90", "95"]
        .into_iter()
        .map(|p| {
            let value = table.get(p).map(seconds_text).unwrap_or_else(|| "–".into());
            (format!("{p}th"), value)
        })
        .collect();
    Ok(render(&QueuePage {
        name,
        description,
        percentiles,
        jobs,
        agents,
    }))
}
