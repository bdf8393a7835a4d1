//! The agent's Prometheus metrics (`-p <port>`), with the reference's names and labels,
//! in a small hand-written text exposition.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// The reference's histogram buckets for phase durations, in seconds.
const BUCKETS: &[f64] = &[60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Counts {
    jobs: u64,
    recovery_failures: u64,
    failures: BTreeMap<String, u64>,
    durations: BTreeMap<String, Histogram>,
}

pub struct Metrics {
    agent_id: String,
    identifier: String,
    counts: Mutex<Counts>,
}

impl Metrics {
    pub fn new(agent_id: &str, identifier: Option<&str>) -> Metrics {
        Metrics {
            agent_id: agent_id.to_string(),
            identifier: identifier.unwrap_or_default().to_string(),
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn job_started(&self) {
        self.counts().jobs += 1;
    }

    pub fn phase_failed(&self, phase: &str) {
        *self.counts().failures.entry(phase.into()).or_default() += 1;
    }

    pub fn recovery_failed(&self) {
        self.counts().recovery_failures += 1;
    }

    pub fn phase_took(&self, phase: &str, seconds: f64) {
        let mut counts = self.counts();
        let histogram = counts.durations.entry(phase.into()).or_default();
        histogram.counts.resize(BUCKETS.len(), 0);
        for (bucket, count) in BUCKETS.iter().zip(histogram.counts.iter_mut()) {
            if seconds <= *bucket {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.count += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let counts = self.counts();
        let agent = &self.agent_id;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP jobs_total Jobs started by this agent\n# TYPE jobs_total counter"
        );
        let _ = writeln!(out, "jobs_total{{agent_id=\"{agent}\"}} {}", counts.jobs);
        let _ = writeln!(out, "# HELP failures_total Phases that ended with a non-zero exit code\n# TYPE failures_total counter");
        for (phase, count) in &counts.failures {
            let _ = writeln!(
                out,
                "failures_total{{agent_id=\"{agent}\",test_phase=\"{phase}\"}} {count}"
            );
        }
        let _ = writeln!(out, "# HELP recovery_failures_total Device recoveries that failed (exit code 46)\n# TYPE recovery_failures_total counter");
        let _ = writeln!(
            out,
            "recovery_failures_total{{agent_id=\"{agent}\"}} {}",
            counts.recovery_failures
        );
        let _ = writeln!(out, "# HELP phase_duration_seconds How long each phase took\n# TYPE phase_duration_seconds histogram");
        for (phase, histogram) in &counts.durations {
            let labels = format!(
                "agent_id=\"{agent}\",test_phase=\"{phase}\",identifier=\"{}\",release=\"\"",
                self.identifier
            );
            for (bucket, count) in BUCKETS.iter().zip(&histogram.counts) {
                let _ = writeln!(
                    out,
                    "phase_duration_seconds_bucket{{{labels},le=\"{bucket:.1}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "phase_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "phase_duration_seconds_sum{{{labels}}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "phase_duration_seconds_count{{{labels}}} {}",
                histogram.count
            );
        }
        out
    }

    /// Answers every request on `port` with the metrics, until the process ends.
    pub async fn serve(self: std::sync::Arc<Self>, port: u16) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve metrics on port {port}: {e}"))?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let metrics = self.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let body = metrics.render();
                        async move {
                            let response = hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(body)))
                                .expect("static response parts are valid");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(())
    }
}
