//! `GET /metrics`: the server's Prometheus metrics. Counters and request latencies are
//! kept in memory since start-up; job and agent counts are read from the database at
//! each scrape, so they are right after a restart too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::reply::ApiError;
use super::App;
use crate::metrics::{self, Exposition, Histogram};

/// Request latency bounds in seconds: from a cached read to a full long-poll.
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Requests are counted by method, route pattern (not the path: ids would make a series
/// per job) and status code.
type RequestKey = (String, String, u16);

#[derive(Default)]
pub struct ServerMetrics {
    submissions: AtomicU64,
    claims: AtomicU64,
    fragments: Mutex<BTreeMap<String, u64>>,
    requests: Mutex<BTreeMap<RequestKey, Histogram>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ServerMetrics {
    pub fn job_submitted(&self) {
        self.submissions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn job_claimed(&self) {
        self.claims.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fragment_stored(&self, log_type: &str) {
        *lock(&self.fragments).entry(log_type.into()).or_default() += 1;
    }

    fn request_took(&self, key: RequestKey, seconds: f64) {
        lock(&self.requests)
            .entry(key)
            .or_insert_with(|| Histogram::new(LATENCY_BOUNDS))
            .observe(seconds);
    }

    fn render_counters(&self, out: &mut Exposition) {
        out.family(
            "tf_jobs_submitted_total",
            "counter",
            "Jobs accepted since the server started",
        );
        let submissions = self.submissions.load(Ordering::Relaxed);
        out.sample("tf_jobs_submitted_total", &[], submissions);
        out.family(
            "tf_job_claims_total",
            "counter",
            "Jobs handed to agents since the server started",
        );
        out.sample(
            "tf_job_claims_total",
            &[],
            self.claims.load(Ordering::Relaxed),
        );
        out.family(
            "tf_log_fragments_total",
            "counter",
            "Log fragments stored since the server started",
        );
        for (log_type, count) in lock(&self.fragments).iter() {
            out.sample(
                "tf_log_fragments_total",
                &[("log_type", log_type.as_str())],
                count,
            );
        }
        out.family(
            "tf_http_request_duration_seconds",
            "histogram",
            "Time to answer HTTP requests (long-polls included)",
        );
        for ((method, route, code), histogram) in lock(&self.requests).iter() {
            let code = code.to_string();
            let labels = [
                ("method", method.as_str()),
                ("route", route.as_str()),
                ("code", code.as_str()),
            ];
            out.histogram("tf_http_request_duration_seconds", &labels, histogram);
        }
    }
}

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
