//! What the server counts in memory since start-up, for `GET /metrics`: jobs submitted and
//! claimed, log fragments stored, and the time every request took.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use crate::job::LogType;
use crate::metrics::{Exposition, Histogram};

/// Request latency bounds in seconds: from a cached read to a full long-poll.
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The request series of one route pattern (not the path: ids would make a series per
/// job), by method and status code. Few per route, so a list.
type RouteSeries = Vec<(&'static str, u16, Histogram)>;

#[derive(Default)]
pub struct ServerMetrics {
    submissions: AtomicU64,
    claims: AtomicU64,
    /// Fragments stored, by `LogType::ALL` index.
    fragments: [AtomicU64; LogType::ALL.len()],
    /// Once a series exists, timing a request takes a read lock and atomic additions:
    /// nothing is allocated and no request waits for another.
    requests: RwLock<HashMap<Box<str>, RouteSeries>>,
}

impl ServerMetrics {
    pub fn job_submitted(&self) {
        self.submissions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn job_claimed(&self) {
        self.claims.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fragment_stored(&self, log_type: LogType) {
        self.fragments_stored(log_type, 1);
    }

    pub fn fragments_stored(&self, log_type: LogType, count: u64) {
        self.fragments[log_type.index()].fetch_add(count, Ordering::Relaxed);
    }

    /// Counts one answered request. `method` and `route` come from closed sets (the
    /// caller's job), so no client can make series without end.
    pub fn request_took(&self, method: &'static str, route: &str, code: u16, seconds: f64) {
        let observed = |series: &RouteSeries| {
            let found = series.iter().find(|(m, c, _)| *m == method && *c == code);
            found.map(|(_, _, histogram)| histogram.observe(seconds))
        };
        let requests = self.requests.read().unwrap_or_else(|p| p.into_inner());
        if requests.get(route).and_then(observed).is_some() {
            return;
        }
        drop(requests);
        let mut requests = self.requests.write().unwrap_or_else(|p| p.into_inner());
        let series = requests.entry(route.into()).or_default();
        if observed(series).is_none() {
            let histogram = Histogram::new(LATENCY_BOUNDS);
            histogram.observe(seconds);
            series.push((method, code, histogram));
        }
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
        for (log_type, count) in LogType::ALL.iter().zip(&self.fragments) {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let labels = [("log_type", log_type.as_str())];
                out.sample("tf_log_fragments_total", &labels, count);
            }
        }
        out.family(
            "tf_http_request_duration_seconds",
            "histogram",
            "Time to answer HTTP requests (long-polls included)",
        );
        let requests = self.requests.read().unwrap_or_else(|p| p.into_inner());
        let mut series: Vec<_> = requests
            .iter()
            .flat_map(|(route, series)| {
                series
                    .iter()
                    .map(move |(method, code, histogram)| (*method, &**route, *code, histogram))
            })
            .collect();
        series.sort_by_key(|(method, route, code, _)| (*method, *route, *code));
        for (method, route, code, histogram) in series {
            let code = code.to_string();
            let labels = [
                ("method", method),
                ("route", route),
                ("code", code.as_str()),
            ];
            out.histogram("tf_http_request_duration_seconds", &labels, histogram);
        }
    }
}
