//! `GET /metrics`: the server's Prometheus metrics. Counters and request latencies are
//! kept in memory since start-up (`counters`); job and agent counts are read from the database at
//! each scrape, so they are right after a restart too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::app::App;
use super::reply::ApiError;
use crate::metrics::{self, Exposition};

/// Times every request into `tf_http_request_duration_seconds`.
pub async fn time_request(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Label values come from a closed set, so no client can make series without end:
    // unknown methods and unmatched paths are one series each, and `/x/` counts as `/x`.
    let method = match request.method().as_str() {
        known @ ("GET" | "POST" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" | "PATCH") => known,
        _ => "other",
    }
    .to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str().trim_end_matches('/'))
        .to_string();
    let response = next.run(request).await;
    let key = (method, route, response.status().as_u16());
    app.metrics
        .request_took(key, started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn scrape(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let agents = app.store.agents().await?;
    // Anyone may submit to any queue name: only queues the lab knows (advertised, or
    // served by an agent) get their own series, the rest count as "other".
    let mut known: BTreeSet<String> = app.store.queue_descriptions().await?.into_keys().collect();
    for agent in &agents {
        if let Some(queues) = agent
            .fields
            .get("queues")
            .and_then(serde_json::Value::as_array)
        {
            known.extend(queues.iter().filter_map(|q| q.as_str()).map(str::to_string));
        }
    }
    let mut jobs: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (queue, state, count) in app.store.job_counts().await? {
        let queue = if known.contains(&queue) {
            queue
        } else {
            "other".into()
        };
        *jobs.entry((queue, state)).or_default() += count;
    }
    let mut out = Exposition::default();
    out.family(
        "tf_jobs",
        "gauge",
        "Jobs kept by the server, by queue (\"other\": queues no agent serves) and state",
    );
    for ((queue, state), count) in &jobs {
        let labels = [("queue", queue.as_str()), ("state", state.as_str())];
        out.sample("tf_jobs", &labels, count);
    }
    out.family("tf_agents", "gauge", "Agents known to the server, by state");
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    for agent in &agents {
        let state = agent
            .fields
            .get("state")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown");
        *by_state.entry(state.to_string()).or_default() += 1;
    }
    for (state, count) in &by_state {
        out.sample("tf_agents", &[("state", state.as_str())], count);
    }
    app.metrics.render_counters(&mut out);
    Ok(([(CONTENT_TYPE, metrics::CONTENT_TYPE)], out.finish()).into_response())
}
