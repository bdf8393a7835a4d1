//! Log fragments on SQLite: stored once per `(job, log type, fragment number)`, read
//! per phase, whole, or the end of each log for a page.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteBackend;
use crate::job::outcome::KillReason;
use crate::job::time;
use crate::job::{JobState, Phase};
use crate::store::backend;
use crate::store::error::Result;
use crate::store::logs::{Fragment, FragmentQuery, PhaseLog, KILL_LINE_WINDOW};
use crate::store::pages::{LogsSoFar, PhaseSpan};

impl backend::Logs for SqliteBackend {
    async fn insert_fragments(
        &self,
        job_id: &str,
        log_type: &str,
        fragments: Vec<Fragment>,
    ) -> Result<()> {
        let single = fragments.len() == 1;
        let (id, log_type) = (job_id.to_string(), log_type.to_string());
        let insert = move |tx: &Connection| Ok(insert_fragments(tx, &id, &log_type, &fragments)?);
        if single {
            self.writer.write_one_statement(insert).await
        } else {
            self.writer.write(insert).await
        }
    }

    async fn read_log(
        &self,
        job_id: &str,
        log_type: &str,
        query: FragmentQuery,
        with_end: bool,
    ) -> Result<(Vec<PhaseLog>, bool)> {
        let (id, kind) = (job_id.to_string(), log_type.to_string());
        self.readers
            .read(move |db| {
                let logs = read_log(db, &id, &kind, &query)?;
                // A job that ended gets no more output: nothing to wait for.
                let ended = with_end && job_has_ended(db, &id)?;
                Ok((logs, ended))
            })
            .await
    }

    async fn full_logs(&self, job_id: &str) -> Result<Vec<(String, String, String)>> {
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

    async fn phase_spans(&self, job_id: &str) -> Result<Vec<PhaseSpan>> {
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

    async fn logs_so_far(&self, job_id: &str, budget: usize) -> Result<LogsSoFar> {
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
                for (log_type, next) in logs.next_fragment.clone() {
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
                    logs.add_newest_first(&log_type, kept);
                }
                Ok(logs)
            })
            .await
    }
}

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
    let mut logs = PhaseLog::each_asked(query);
    let mut rows = statement.query(params![
        job_id,
        log_type,
        query.start_fragment,
        query.start_timestamp.unwrap_or(i64::MIN),
        query.phase
    ])?;
    while let Some(row) = rows.next()? {
        let text = row.get_ref(2)?.as_str().unwrap_or_default();
        PhaseLog::add(&mut logs, &row.get::<_, String>(0)?, row.get(1)?, text);
    }
    Ok(logs)
}
