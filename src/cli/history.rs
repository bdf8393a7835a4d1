//! The local job history, `$XDG_CONFIG_HOME/testflinger-cli-history.json`, shared with the
//! reference CLI: the last ten submitted jobs with their queue, submission time and last
//! known state, oldest first.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::config::config_home;
use crate::codec::pyjson;
use crate::job::Outcome;

const KEEP: usize = 10;

pub struct History {
    path: PathBuf,
    /// In file order (insertion order), which serde_json's sorted maps would lose.
    jobs: Vec<(String, Value)>,
}

impl History {
    pub fn load() -> History {
        let path = config_home().join("testflinger-cli-history.json");
        let jobs = match std::fs::read(&path) {
            Err(_) => Vec::new(),
            Ok(bytes) => ordered_entries(&String::from_utf8_lossy(&bytes)).unwrap_or_else(|| {
                eprintln!(
                    "ERROR: Error loading history file from {}: not a JSON object; starting afresh",
                    path.display()
                );
                Vec::new()
            }),
        };
        History { path, jobs }
    }

    /// Job ids, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.jobs.iter().map(|(id, _)| id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &(String, Value)> {
        self.jobs.iter()
    }

    /// Records a newly submitted job (state `unknown`), keeping the last ten.
    pub fn add(&mut self, job_id: &str, queue: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let entry = json!({"queue": queue, "submission_time": now, "job_state": "unknown"});
        match self.jobs.iter_mut().find(|(id, _)| id == job_id) {
            Some((_, existing)) => *existing = entry,
            None => self.jobs.push((job_id.to_string(), entry)),
        }
        let excess = self.jobs.len().saturating_sub(KEEP);
        self.jobs.drain(..excess);
        self.save();
    }

    /// Notes a job's state, for jobs in the history only.
    pub fn update(&mut self, job_id: &str, state: &str) {
        self.note(job_id, state, None);
    }

    /// Notes a job's state and, once it has finished, its outcome (our addition to the
    /// entries: the reference CLI keeps keys it does not know). A new state without an
    /// outcome drops the old one.
    pub fn note(&mut self, job_id: &str, state: &str, outcome: Option<Outcome>) {
        let Some((_, entry)) = self.jobs.iter_mut().find(|(id, _)| id == job_id) else {
            return;
        };
        let before = entry.clone();
        let state_changed = entry.get("job_state").and_then(Value::as_str) != Some(state);
        entry["job_state"] = json!(state);
        match (outcome, entry.as_object_mut()) {
            (Some(outcome), _) => entry["outcome"] = json!(outcome),
            (None, Some(fields)) if state_changed => {
                fields.remove("outcome");
            }
            _ => {}
        }
        if *entry != before {
            self.save();
        }
    }

    /// The outcome noted in a history entry.
    pub fn outcome_of(entry: &Value) -> Option<Outcome> {
        serde_json::from_value(entry.get("outcome")?.clone()).ok()
    }

    fn save(&self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Entries keep the reference's key order: queue, submission_time, job_state (then
        // our outcome).
        let entries: Vec<String> = self
            .jobs
            .iter()
            .map(|(id, entry)| {
                let field = |name: &str| entry.get(name).cloned().unwrap_or(Value::Null);
                let ordered = Entry {
                    queue: field("queue"),
                    submission_time: field("submission_time"),
                    job_state: field("job_state"),
                    outcome: entry.get("outcome").cloned(),
                };
                let id = pyjson::dumps(id.as_str());
                format!("{id}: {}", pyjson::dumps(&ordered))
            })
            .collect();
        let _ = std::fs::write(&self.path, format!("{{{}}}", entries.join(", ")));
    }
}

#[derive(serde::Serialize)]
struct Entry {
    queue: Value,
    submission_time: Value,
    job_state: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Value>,
}

/// The top-level entries of a JSON object, in file order.
fn ordered_entries(text: &str) -> Option<Vec<(String, Value)>> {
    // Parse once for validity and values; then recover the key order from the text.
    let Value::Object(map) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let mut order: Vec<(usize, String)> = map
        .keys()
        .filter_map(|key| {
            text.find(&Value::from(key.as_str()).to_string())
                .map(|at| (at, key.clone()))
        })
        .collect();
    order.sort();
    Some(
        order
            .into_iter()
            .map(|(_, key)| (key.clone(), map[&key].clone()))
            .collect(),
    )
}
