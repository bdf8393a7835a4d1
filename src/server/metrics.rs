//! `GET /metrics`: the server's Prometheus metrics. Counters and request latencies are
//! kept in memory since start-up (`counters`); job and agent counts are read from the database at
//! each scrape, so they are right after a restart too.

use axum::extract::{MatchedPath, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::app::App;
use super::reply::ApiError;
use crate::metrics::{self, Exposition};

/// The method label of `tf_http_request_duration_seconds`: a closed set, so no client
/// can make series without end.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// The route label: the pattern a request matched (`/x/` counts as `/x`), or one series
/// for every path that matched none.
pub fn route_label(route: Option<&MatchedPath>) -> &str {
    route.map_or("unmatched", |path| path.as_str().trim_end_matches('/'))
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
