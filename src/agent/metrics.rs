//! The agent's Prometheus metrics (`-p <port>`), with the reference's names and labels,
//! in the text exposition of `crate::metrics`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::metrics::{Exposition, Histogram, CONTENT_TYPE};

/// The reference's histogram buckets for phase durations, in seconds.
const BUCKETS: &[f64] = &[60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0];

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
        self.counts()
            .durations
            .entry(phase.into())
            .or_insert_with(|| Histogram::new(BUCKETS))
            .observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let counts = self.counts();
        let agent = self.agent_id.as_str();
        let mut out = Exposition::default();
        out.family("jobs_total", "counter", "Jobs started by this agent");
        out.sample("jobs_total", &[("agent_id", agent)], counts.jobs);
        out.family(
            "failures_total",
            "counter",
            "Phases that ended with a non-zero exit code",
        );
        for (phase, count) in &counts.failures {
            let labels = [("agent_id", agent), ("test_phase", phase.as_str())];
            out.sample("failures_total", &labels, count);
        }
        out.family(
            "recovery_failures_total",
            "counter",
            "Device recoveries that failed (exit code 46)",
        );
        out.sample(
            "recovery_failures_total",
            &[("agent_id", agent)],
            counts.recovery_failures,
        );
        out.family(
            "phase_duration_seconds",
            "histogram",
            "How long each phase took",
        );
        for (phase, histogram) in &counts.durations {
            let labels = [
                ("agent_id", agent),
                ("test_phase", phase.as_str()),
                ("identifier", self.identifier.as_str()),
                ("release", ""),
            ];
            out.histogram("phase_duration_seconds", &labels, histogram);
        }
        out.finish()
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
                                .header("content-type", CONTENT_TYPE)
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
