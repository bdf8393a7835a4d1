//! The Redis-era result API on SQLite: merged result documents, and a read cursor per
//! job and stream over its log fragments.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::SqliteBackend;
use crate::job::time;
use crate::store::backend;
use crate::store::error::Result;
use crate::store::legacy::{phase_of_state, LegacyResult};

impl backend::Legacy for SqliteBackend {
    /// Merges a result document into the job's, key by key, as the old server's
    /// `dict.update` did (a key posted again replaces its value). Unknown jobs are
    /// ignored, like every result report.
    async fn merge_legacy_result(&self, job_id: &str, result: LegacyResult) -> Result<()> {
        let id = job_id.to_string();
        self.writer
            .write(move |tx| {
                if !result.statuses.is_empty() {
                    tx.prepare_cached(
                        "UPDATE jobs SET status = json_patch(coalesce(status, '{}'), ?2)
                         WHERE job_id = ?1",
                    )?
                    .execute(params![id, Value::Object(result.statuses).to_string()])?;
                }
                if !result.document.is_empty() {
                    let mut document = read_document(tx, &id)?;
                    document.extend(result.document);
                    tx.prepare_cached(
                        "INSERT INTO legacy_results (job_id, document)
                         SELECT job_id, ?2 FROM jobs WHERE job_id = ?1
                         ON CONFLICT (job_id) DO UPDATE SET document = excluded.document",
                    )?
                    .execute(params![id, Value::Object(document).to_string()])?;
                }
                Ok(())
            })
            .await
    }

    /// The free-form keys old agents posted for a job (empty when none).
    async fn legacy_result(&self, job_id: &str) -> Result<Map<String, Value>> {
        let id = job_id.to_string();
        self.readers.lookup(move |db| read_document(db, &id)).await
    }

    /// Stores raw text posted to a legacy stream as the next fragment of the job's log,
    /// in the phase the job is in. Unknown jobs are ignored.
    async fn append_legacy_output(
        &self,
        job_id: &str,
        log_type: &str,
        text: String,
    ) -> Result<bool> {
        let (id, kind) = (job_id.to_string(), log_type.to_string());
        self.writer
            .write_one_statement(move |tx| {
                let state: Option<String> = tx
                    .prepare_cached("SELECT state FROM jobs WHERE job_id = ?1")?
                    .query_row([&id], |row| row.get(0))
                    .optional()?;
                let Some(state) = state else {
                    return Ok(false);
                };
                let now = time::now();
                tx.prepare_cached(
                    "INSERT INTO log_fragments
                         (job_id, log_type, fragment_number, phase, timestamp, log_data, stored_at)
                     VALUES (?1, ?2, (SELECT coalesce(max(fragment_number), -1) + 1
                                      FROM log_fragments WHERE job_id = ?1 AND log_type = ?2),
                             ?3, ?4, ?5, ?4)",
                )?
                .execute(params![id, kind, phase_of_state(&state), now, text])?;
                Ok(true)
            })
            .await
    }

    /// The text of the job's `log_type` fragments stored since the previous call (all of
    /// it the first time), and from then on not again. Empty when there is nothing new.
    async fn take_legacy_output(&self, job_id: &str, log_type: &str) -> Result<String> {
        let (id, kind) = (job_id.to_string(), log_type.to_string());
        // The writer only moves the cursor, so two readers never get the same text; the
        // text itself, possibly large, is read outside it.
        let range = self
            .writer
            .write(move |tx| take_range(tx, &id, &kind))
            .await?;
        let Some((first, last)) = range else {
            return Ok(String::new());
        };
        let (id, kind) = (job_id.to_string(), log_type.to_string());
        self.readers
            .read(move |db| {
                let text: Option<String> = db
                    .prepare_cached(
                        "SELECT group_concat(log_data, '' ORDER BY fragment_number)
                         FROM log_fragments
                         WHERE job_id = ?1 AND log_type = ?2
                           AND fragment_number BETWEEN ?3 AND ?4",
                    )?
                    .query_row(params![id, kind, first, last], |row| row.get(0))?;
                Ok(text.unwrap_or_default())
            })
            .await
    }
}

/// Claims the fragments from the job's read cursor to its newest one; `None` when there
/// are none (or no such job).
fn take_range(tx: &Connection, job_id: &str, log_type: &str) -> Result<Option<(i64, i64)>> {
    let first: i64 = tx
        .prepare_cached(
            "SELECT next_fragment FROM legacy_stream_reads WHERE job_id = ?1 AND log_type = ?2",
        )?
        .query_row(params![job_id, log_type], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    let last: Option<i64> = tx
        .prepare_cached(
            "SELECT max(fragment_number) FROM log_fragments WHERE job_id = ?1 AND log_type = ?2",
        )?
        .query_row(params![job_id, log_type], |row| row.get(0))?;
    let Some(last) = last.filter(|last| *last >= first) else {
        return Ok(None);
    };
    tx.prepare_cached(
        "INSERT INTO legacy_stream_reads (job_id, log_type, next_fragment)
         SELECT job_id, ?2, ?3 FROM jobs WHERE job_id = ?1
         ON CONFLICT (job_id, log_type) DO UPDATE SET next_fragment = excluded.next_fragment",
    )?
    .execute(params![job_id, log_type, last + 1])?;
    Ok(Some((first, last)))
}

fn read_document(db: &Connection, job_id: &str) -> Result<Map<String, Value>> {
    let text: Option<String> = db
        .prepare_cached("SELECT document FROM legacy_results WHERE job_id = ?1")?
        .query_row([job_id], |row| row.get(0))
        .optional()?;
    match text {
        Some(text) => Ok(serde_json::from_str(&text)?),
        None => Ok(Map::new()),
    }
}
