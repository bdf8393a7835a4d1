//! Reads only the web pages need: a job with everything shown about it, when each phase
//! printed, and the end of its logs.

use serde_json::{Map, Value};

use crate::job::time::Micros;
use crate::job::Outcome;

/// A job as its page shows it.
pub struct JobRecord {
    pub job_id: String,
    pub queue: String,
    pub state: String,
    pub created_at: Micros,
    pub started_at: Option<Micros>,
    /// The submitted definition (validated, secrets as references only).
    pub definition: Map<String, Value>,
    /// Exit code per phase.
    pub status: Map<String, Value>,
    pub device_info: Option<Value>,
    pub has_artifact: bool,
    /// The agent that took the job, once one has (agents without a name stay `None`).
    pub agent: Option<String>,
    /// `None` while the job has not finished.
    pub outcome: Option<Outcome>,
}

/// When a phase printed its first and its last output line.
pub struct PhaseSpan {
    pub phase: String,
    pub first: Micros,
    pub last: Micros,
}

/// The end of a job's logs as far as they went when read, and where a follower continues.
#[derive(Default)]
pub struct LogsSoFar {
    /// `(log type, phase, text)`, phases in the order they started.
    pub texts: Vec<(String, String, String)>,
    /// The fragment number after the last one included, per log type.
    pub next_fragment: std::collections::BTreeMap<String, i64>,
    /// The log types whose beginning was left out to stay within the budget.
    pub cut: Vec<String>,
}

impl LogsSoFar {
    /// Adds the end of one log: `(phase, text)` fragments read newest first, oldest first
    /// again, consecutive fragments of a phase joined.
    pub(super) fn add_newest_first(&mut self, log_type: &str, kept: Vec<(String, String)>) {
        for (phase, text) in kept.into_iter().rev() {
            match self.texts.last_mut() {
                Some((kind, last_phase, joined)) if kind == log_type && *last_phase == phase => {
                    joined.push_str(&text)
                }
                _ => self.texts.push((log_type.to_string(), phase, text)),
            }
        }
    }
}

/// One provision attempt of an agent.
pub struct ProvisionAttempt {
    pub job_id: String,
    pub exit_code: i64,
    pub detail: Option<String>,
    pub timestamp: Micros,
}
