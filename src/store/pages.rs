//! Reads only the web pages need: a job with everything shown about it, when each phase
//! printed, an agent's provision history and the jobs it ran.

use rusqlite::OptionalExtension;
use serde_json::{Map, Value};

use super::error::Result;
use super::jobs::{read_outcome, summary, JobSummary, SUMMARY_COLUMNS};
use super::open::Store;
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

/// One provision attempt of an agent.
pub struct ProvisionAttempt {
    pub job_id: String,
    pub exit_code: i64,
    pub detail: Option<String>,
    pub timestamp: Micros,
}

impl Store {
    pub async fn job_record(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let job_id = job_id.to_string();
        let row = self
            .readers
            .read(move |db| {
                Ok(db
                    .prepare_cached(
                        "SELECT job_id, queue, state, created_at, started_at, job_data, status,
                                device_info,
                                EXISTS (SELECT 1 FROM blobs
                                        WHERE blobs.job_id = jobs.job_id AND kind = 'artifact'),
                                agent, outcome
                         FROM jobs WHERE job_id = ?1",
                    )?
                    .query_row([&job_id], |row| {
                        Ok((
                            (
                                row.get::<_, String>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, String>(2)?,
                                row.get::<_, Micros>(3)?,
                                row.get::<_, Option<Micros>>(4)?,
                            ),
                            (
                                row.get::<_, String>(5)?,
                                row.get::<_, Option<String>>(6)?,
                                row.get::<_, Option<String>>(7)?,
                                row.get::<_, bool>(8)?,
                            ),
                            (
                                row.get::<_, Option<String>>(9)?,
                                row.get::<_, Option<String>>(10)?,
                            ),
                        ))
                    })
                    .optional()?)
            })
            .await?;
        let Some(((job_id, queue, state, created_at, started_at), texts, (agent, outcome))) = row
        else {
            return Ok(None);
        };
        let (definition, status, device_info, has_artifact) = texts;
        let status: Map<String, Value> = status
            .map(|text| serde_json::from_str(&text))
            .transpose()?
            .unwrap_or_default();
        Ok(Some(JobRecord {
            outcome: read_outcome(&state, outcome.as_deref(), || Some(&status)),
            job_id,
            queue,
            state,
            created_at,
            started_at,
            definition: serde_json::from_str(&definition)?,
            status,
            device_info: device_info
                .map(|text| serde_json::from_str(&text))
                .transpose()?,
            has_artifact,
            agent,
        }))
    }

    /// Each phase's output span, in the order the phases started.
    pub async fn phase_spans(&self, job_id: &str) -> Result<Vec<PhaseSpan>> {
        let job_id = job_id.to_string();
        self.readers
            .read(move |db| {
                let mut query = db.prepare_cached(
                    "SELECT phase, min(timestamp), max(timestamp) FROM log_fragments
                     WHERE job_id = ?1 AND log_type = 'output'
                     GROUP BY phase ORDER BY min(timestamp)",
                )?;
                let spans = query.query_map([&job_id], |row| {
                    Ok(PhaseSpan {
                        phase: row.get(0)?,
                        first: row.get(1)?,
                        last: row.get(2)?,
                    })
                })?;
                Ok(spans.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    /// The last `budget` bytes (whole fragments) of each of a job's logs, up to now. The
    /// text stops exactly at `next_fragment`, so a page that follows from there neither
    /// repeats nor misses a line, and a job with gigabytes of output costs a page no more
    /// than the budget.
    pub async fn logs_so_far(&self, job_id: &str, budget: usize) -> Result<LogsSoFar> {
        let job_id = job_id.to_string();
        self.readers
            .read(move |db| {
                let mut logs = LogsSoFar::default();
                let mut ends = db.prepare_cached(
                    "SELECT log_type, max(fragment_number) FROM log_fragments
                     WHERE job_id = ?1 GROUP BY log_type",
                )?;
                let ends = ends.query_map([&job_id], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?;
                for end in ends {
                    let (log_type, last) = end?;
                    logs.next_fragment.insert(log_type, last + 1);
                }
                // Newest first along the unique index, until the budget is spent.
                let mut newest_first = db.prepare_cached(
                    "SELECT phase, log_data FROM log_fragments
                     WHERE job_id = ?1 AND log_type = ?2 AND fragment_number < ?3
                     ORDER BY fragment_number DESC",
                )?;
                for (log_type, next) in &logs.next_fragment {
                    let mut kept: Vec<(String, String)> = Vec::new();
                    let mut spent = 0;
                    let mut rows = newest_first.query(rusqlite::params![job_id, log_type, next])?;
                    while let Some(row) = rows.next()? {
                        let text: String = row.get(1)?;
                        spent += text.len();
                        if spent > budget {
                            logs.cut.push(log_type.clone());
                            break;
                        }
                        kept.push((row.get(0)?, text));
                    }
                    // Oldest first again, consecutive fragments of a phase joined.
                    for (phase, text) in kept.into_iter().rev() {
                        match logs.texts.last_mut() {
                            Some((kind, last_phase, joined))
                                if kind == log_type && *last_phase == phase =>
                            {
                                joined.push_str(&text)
                            }
                            _ => logs.texts.push((log_type.clone(), phase, text)),
                        }
                    }
                }
                Ok(logs)
            })
            .await
    }

    /// An agent's provision attempts, newest first.
    pub async fn provision_history(&self, agent: &str) -> Result<Vec<ProvisionAttempt>> {
        let agent = agent.to_string();
        self.readers
            .read(move |db| {
                let mut query = db.prepare_cached(
                    "SELECT job_id, exit_code, detail, timestamp FROM provision_logs
                     WHERE agent = ?1 ORDER BY seq DESC",
                )?;
                let attempts = query.query_map([&agent], |row| {
                    Ok(ProvisionAttempt {
                        job_id: row.get(0)?,
                        exit_code: row.get(1)?,
                        detail: row.get(2)?,
                        timestamp: row.get(3)?,
                    })
                })?;
                Ok(attempts.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    /// The lines an agent posted in its reports (the last hundred are kept), oldest first.
    pub async fn agent_log(&self, agent: &str) -> Result<Vec<String>> {
        let agent = agent.to_string();
        let log: Option<String> = self
            .readers
            .read(move |db| {
                Ok(db
                    .prepare_cached("SELECT log FROM agents WHERE name = ?1")?
                    .query_row([&agent], |row| row.get(0))
                    .optional()?)
            })
            .await?;
        Ok(match log {
            Some(text) => serde_json::from_str(&text)?,
            None => Vec::new(),
        })
    }

    /// The last `limit` jobs an agent took, newest first.
    pub async fn agent_jobs(&self, agent: &str, limit: u32) -> Result<Vec<JobSummary>> {
        let agent = agent.to_string();
        self.readers
            .read(move |db| {
                let mut query = db.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM jobs
                     WHERE agent = ?1 ORDER BY seq DESC LIMIT ?2"
                ))?;
                let jobs = query.query_map(rusqlite::params![agent, limit], summary)?;
                Ok(jobs.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }
}
