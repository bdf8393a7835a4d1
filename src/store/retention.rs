//! Expiry of old data, like the reference's MongoDB TTL indexes: jobs by submission
//! time, log fragments and archives by the time they were stored, agents and advertised
//! queues by their last report, wait-time samples by when they were taken.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OptionalExtension};

use super::error::Result;
use super::open::Store;
use crate::job::time::{self, Micros};

/// A stored archive file no row points to is deleted after this grace period (an upload
/// renames its file into place just before its row commits).
const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Refresh tokens unused this long are forgotten (the reference's 90 days), whatever
/// the retention of jobs.
const REFRESH_TOKEN_IDLE: Micros = 90 * 86_400 * 1_000_000;

/// Rows deleted per table in one write: a large expiry never holds the writer (and so
/// every claim and log post) for long.
const BATCH: i64 = 5000;

/// What one expiry pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub jobs: usize,
    pub fragments: usize,
    pub files: usize,
    pub agents: usize,
    /// Advertised queues, wait-time samples, idle refresh tokens, expired secrets.
    pub other: usize,
}

impl Expired {
    fn is_empty(&self) -> bool {
        *self == Expired::default()
    }

    fn add(&mut self, more: Expired) {
        self.jobs += more.jobs;
        self.fragments += more.fragments;
        self.files += more.files;
        self.agents += more.agents;
        self.other += more.other;
    }
}

impl Store {
    /// Deletes everything older than `cutoff`, batch by batch, then archive files nothing
    /// points to.
    pub async fn expire(&self, cutoff: Micros) -> Result<Expired> {
        let mut total = Expired::default();
        loop {
            let (batch, dropped_files) = self
                .writer
                .write(move |tx| expire_batch(tx, cutoff))
                .await?;
            for file_name in &dropped_files {
                self.blobs.remove(Some(file_name));
            }
            if batch.is_empty() {
                break;
            }
            total.add(batch);
        }
        total.files += self.remove_orphan_files().await?;
        Ok(total)
    }

    /// Deletes archive files no row points to, only where that absence is certain: the
    /// blob directory belongs to this database (see `BlobDir::open_for_server`), and the
    /// file is older than an upload's rename-then-commit.
    async fn remove_orphan_files(&self) -> Result<usize> {
        if !self.blobs.sweepable() {
            return Ok(0);
        }
        let referenced: HashSet<String> = self
            .readers
            .read(|db| {
                let mut query = db.prepare("SELECT file_name FROM blobs")?;
                let names = query.query_map([], |row| row.get(0))?;
                Ok(names.collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        let now = SystemTime::now();
        let mut removed = 0;
        for (name, modified) in self.blobs.archives()? {
            let old_enough = now.duration_since(modified).unwrap_or_default() > ORPHAN_GRACE;
            if old_enough && !referenced.contains(&name) {
                self.blobs.remove(Some(&name));
                removed += 1;
            }
        }
        Ok(removed)
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
