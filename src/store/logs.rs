//! Log fragments: numbered pieces of a job's `output` or `serial` log, stored once per
//! `(job, log type, fragment number)` so an agent can resend freely.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::error::Result;
use super::open::Store;
use crate::job::outcome::KillReason;
use crate::job::time::{self, Micros};
use crate::job::{JobState, Phase};

/// How many of a killed phase's last output fragments are searched for the agent's line
/// saying why: the line is followed only by what the phase printed while it was being
/// killed (the reference agent: one chunk; ours: a few seconds' worth).
const KILL_LINE_WINDOW: i64 = 32;

/// Why the agent killed `phase` of job `job_id`, if the end of its output says.
pub(super) fn kill_reason_in_output(
    db: &Connection,
    job_id: &str,
    phase: Phase,
) -> rusqlite::Result<Option<KillReason>> {
    let mut newest_first = db.prepare_cached(
        "SELECT log_data FROM log_fragments
         WHERE job_id = ?1 AND log_type = 'output' AND phase = ?2
         ORDER BY fragment_number DESC LIMIT ?3",
    )?;
    let mut rows = newest_first.query(params![job_id, phase.as_str(), KILL_LINE_WINDOW])?;
    while let Some(row) = rows.next()? {
        if let Some(reason) = KillReason::found_in(&row.get::<_, String>(0)?) {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}

pub struct Fragment {
    pub fragment_number: i64,
    pub phase: Phase,
    pub timestamp: Micros,
    pub log_data: String,
}

#[derive(Default, Clone)]
pub struct FragmentQuery {
    pub start_fragment: i64,
    pub start_timestamp: Option<Micros>,
    pub phase: Option<String>,
}

/// One phase's share of a log.
#[derive(Debug, PartialEq)]
pub struct PhaseLog {
    pub phase: &'static str,
    /// -1 when the phase has no matching fragment.
    pub last_fragment_number: i64,
    pub log_data: String,
}

/// Stores `fragments` of log `log_type`; one with a number already stored replaces it
/// (a resend).
fn insert_fragments(
    tx: &Connection,
    job_id: &str,
    log_type: &str,
    fragments: &[Fragment],
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT OR REPLACE INTO log_fragments
             (job_id, log_type, fragment_number, phase, timestamp, log_data, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let stored_at = time::now();
    for fragment in fragments {
        insert.execute(params![
            job_id,
            log_type,
            fragment.fragment_number,
            fragment.phase.as_str(),
            fragment.timestamp,
            fragment.log_data,
            stored_at
        ])?;
    }
    Ok(())
}

impl Store {
    pub async fn append_log_fragment(
        &self,
        job_id: &str,
        log_type: &str,
        fragment: Fragment,
    ) -> Result<()> {
        let (id, log_type) = (job_id.to_string(), log_type.to_string());
        self.writer
            .write_one_statement(move |tx| Ok(insert_fragments(tx, &id, &log_type, &[fragment])?))
            .await?;
        self.signals.wake_job(job_id);
        Ok(())
    }

    /// Stores several fragments of one log at once: all of them, or none if one fails.
    /// Each is stored as `append_log_fragment` stores it alone (a resent number replaces).
    pub async fn append_log_fragments(
        &self,
        job_id: &str,
        log_type: &str,
        fragments: Vec<Fragment>,
    ) -> Result<()> {
        let (id, log_type) = (job_id.to_string(), log_type.to_string());
        self.writer
            .write(move |tx| Ok(insert_fragments(tx, &id, &log_type, &fragments)?))
            .await?;
        self.signals.wake_job(job_id);
        Ok(())
    }

    /// The log per phase (every phase, or only `query.phase`). With a `wait`, an answer
    /// without any fragment is given only once that long passed or the job changed (a
    /// fragment, or a new state a follower wants to see).
    pub async fn log(
        &self,
        job_id: &str,
        log_type: &str,
        query: FragmentQuery,
        wait: Duration,
    ) -> Result<Vec<PhaseLog>> {
        let subscription = (!wait.is_zero()).then(|| self.signals.job(job_id));
        let deadline = tokio::time::Instant::now() + wait;
        let mut woken = false;
        loop {
            let wakeup = subscription.as_ref().map(|s| {
                let mut notified = Box::pin(s.notify.notified());
                notified.as_mut().enable();
                notified
            });
            let (id, kind, q) = (job_id.to_string(), log_type.to_string(), query.clone());
            let waiting = subscription.is_some();
            let (logs, ended) = self
                .readers
                .read(move |db| {
                    let logs = read_log(db, &id, &kind, &q)?;
                    // A job that ended gets no more output: nothing to wait for.
                    let ended = waiting && job_has_ended(db, &id)?;
                    Ok((logs, ended))
                })
                .await?;
            let found = ended || logs.iter().any(|log| log.last_fragment_number >= 0);
            match wakeup {
                Some(wakeup) if !found && !woken => {
                    if self.signals.wait(wakeup, deadline).await.is_none() {
                        return Ok(logs);
                    }
                    woken = true;
                }
                _ => return Ok(logs),
            }
        }
    }

    /// Every fragment of a job, concatenated per `(phase, log type)`, for results.
    pub async fn full_logs(&self, job_id: &str) -> Result<Vec<(String, String, String)>> {
        let job_id = job_id.to_string();
        self.readers
            .read(move |db| {
                // In the unique index's order, so no sort; an ordered group_concat would
                // build a temporary table per request, even for a job without logs.
                let mut query = db.prepare_cached(
                    "SELECT phase, log_type, log_data FROM log_fragments
                     WHERE job_id = ?1 ORDER BY log_type, fragment_number",
                )?;
                let mut logs: BTreeMap<(String, String), String> = BTreeMap::new();
                let mut rows = query.query([&job_id])?;
                while let Some(row) = rows.next()? {
                    let text = row.get_ref(2)?.as_str().map_err(rusqlite::Error::from)?;
                    logs.entry((row.get(0)?, row.get(1)?))
                        .or_default()
                        .push_str(text);
                }
                Ok(logs
                    .into_iter()
                    .map(|((phase, log_type), text)| (phase, log_type, text))
                    .collect())
            })
            .await
    }
}

fn job_has_ended(db: &Connection, job_id: &str) -> Result<bool> {
    let state: Option<String> = db
        .prepare_cached("SELECT state FROM jobs WHERE job_id = ?1")?
        .query_row([job_id], |row| row.get(0))
        .optional()?;
    Ok(state.is_some_and(|s| JobState::is_finished_name(&s)))
}

fn read_log(
    db: &Connection,
    job_id: &str,
    log_type: &str,
    query: &FragmentQuery,
) -> Result<Vec<PhaseLog>> {
    let mut statement = db.prepare_cached(
        "SELECT phase, fragment_number, log_data FROM log_fragments
         WHERE job_id = ?1 AND log_type = ?2 AND fragment_number >= ?3 AND timestamp >= ?4
           AND (?5 IS NULL OR phase = ?5)
         ORDER BY fragment_number",
    )?;
    let mut logs: Vec<PhaseLog> = Phase::NAMES
        .iter()
        .filter(|phase| {
            query
                .phase
                .as_deref()
                .is_none_or(|wanted| wanted == **phase)
        })
        .map(|phase| PhaseLog {
            phase,
            last_fragment_number: -1,
            log_data: String::new(),
        })
        .collect();
    let mut rows = statement.query(params![
        job_id,
        log_type,
        query.start_fragment,
        query.start_timestamp.unwrap_or(i64::MIN),
        query.phase
    ])?;
    while let Some(row) = rows.next()? {
        let phase: String = row.get(0)?;
        if let Some(log) = logs.iter_mut().find(|log| log.phase == phase) {
            log.last_fragment_number = row.get(1)?;
            log.log_data
                .push_str(row.get_ref(2)?.as_str().unwrap_or_default());
        }
    }
    Ok(logs)
}
