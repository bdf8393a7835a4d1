//! Expiry on SQLite, in bounded batches; the archives rows point to; the store's identity.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::{schema, SqliteBackend};
use crate::job::time::{self, Micros};
use crate::store::backend;
use crate::store::error::Result;
use crate::store::retention::{Expired, BATCH, REFRESH_TOKEN_IDLE};

impl backend::Reachability for SqliteBackend {
    async fn answer(&self) -> Result<()> {
        self.readers
            .read(|db| Ok(db.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

impl backend::Retention for SqliteBackend {
    async fn expire_batch(&self, cutoff: Micros) -> Result<Option<(Expired, Vec<String>)>> {
        // Only one server writes to a SQLite database: it always has its turn.
        let batch = self
            .writer
            .write(move |tx| expire_batch(tx, cutoff))
            .await?;
        Ok(Some(batch))
    }

    async fn referenced_files(&self) -> Result<HashSet<String>> {
        self.readers
            .read(|db| {
                let mut query = db.prepare("SELECT file_name FROM blobs")?;
                let names = query.query_map([], |row| row.get(0))?;
                Ok(names.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn identity(&self) -> Result<(String, bool)> {
        self.readers
            .read(|db| Ok(schema::store_identity(db)?))
            .await
    }
}

/// The rowid of the oldest row of `table` (log fragments, wait times) whose `time` is at
/// or after `cutoff`. Rowids and those times grow together (one writer appends), so the
/// expired rows are exactly the rows before it; a bisection over rowids finds it in a
/// few dozen lookups, and no index on the time has to be kept up by every append.
fn first_row_kept(
    db: &Connection,
    table: &str,
    time: &str,
    cutoff: Micros,
) -> rusqlite::Result<i64> {
    let (mut low, mut high): (i64, i64) = db.query_row(
        &format!("SELECT coalesce(min(rowid), 0), coalesce(max(rowid), 0) + 1 FROM {table}"),
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let mut first_at_or_after = db.prepare(&format!(
        "SELECT rowid, {time} FROM {table} WHERE rowid >= ?1 ORDER BY rowid LIMIT 1"
    ))?;
    while low < high {
        let middle = low + (high - low) / 2;
        let first: Option<(i64, Micros)> = first_at_or_after
            .query_row([middle], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        match first {
            Some((rowid, at)) if at < cutoff => low = rowid + 1,
            // Kept from here on, or nothing at all from here on.
            _ => high = middle,
        }
    }
    Ok(low)
}

/// Deletes up to `BATCH` expired rows of each table; returns the archive files whose rows
/// went.
fn expire_batch(tx: &Connection, cutoff: Micros) -> Result<(Expired, Vec<String>)> {
    let delete = |table: &str, expired: &str, bound: Micros| {
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE rowid IN
                     (SELECT rowid FROM {table} WHERE {expired} LIMIT {BATCH})"
            ),
            [bound],
        )
    };
    let dropped_files: Vec<String> = tx
        .prepare(&format!(
            "DELETE FROM blobs WHERE rowid IN
                 (SELECT rowid FROM blobs WHERE stored_at < ?1 LIMIT {BATCH})
             RETURNING file_name"
        ))?
        .query_map(params![cutoff], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let expired = Expired {
        jobs: delete("jobs", "created_at < ?1", cutoff)?,
        fragments: delete(
            "log_fragments",
            "rowid < ?1",
            first_row_kept(tx, "log_fragments", "stored_at", cutoff)?,
        )?,
        agents: delete("agents", "updated_at < ?1", cutoff)?,
        other: delete("queues", "updated_at < ?1", cutoff)?
            + delete(
                "wait_times",
                "rowid < ?1",
                first_row_kept(tx, "wait_times", "recorded_at", cutoff)?,
            )?
            + delete(
                "refresh_tokens",
                "last_accessed < ?1",
                time::now() - REFRESH_TOKEN_IDLE,
            )?
            + delete("secrets", "expires_at < ?1", time::now())?,
        files: dropped_files.len(),
    };
    Ok((expired, dropped_files))
}
