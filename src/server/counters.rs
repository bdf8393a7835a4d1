//! What the server counts in memory since start-up, for `GET /metrics`: jobs submitted and
//! claimed, log fragments stored, and the time every request took.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::metrics::{Exposition, Histogram};

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

    pub fn request_took(&self, key: RequestKey, seconds: f64) {
        lock(&self.requests)
            .entry(key)
            .or_insert_with(|| Histogram::new(LATENCY_BOUNDS))
            .observe(seconds);
    }

    pub fn render_counters(&self, out: &mut Exposition) {
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
