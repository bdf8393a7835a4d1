//! Expiry of old rows on PostgreSQL, with SQLite's rules (`store/retention.rs`), and the
//! store's identity, which its archive directory repeats (`store/blobs.rs`).

use std::collections::HashSet;

use super::PostgresBackend;
use crate::job::time::{self, Micros};
use crate::store::backend;
use crate::store::error::Result;
use crate::store::retention::Expired;

/// Rows deleted per table in one batch (as SQLite's `BATCH`, store/retention.rs): a
/// large expiry never holds locks for long.
const BATCH: i64 = 5000;

/// Refresh tokens unused this long are forgotten (as SQLite's `REFRESH_TOKEN_IDLE`).
const REFRESH_TOKEN_IDLE: Micros = 90 * 86_400 * 1_000_000;

/// Deletes up to `$2` rows of `table` that `expired` (against `$1`) selects.
fn delete_batch(table: &str, expired: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE ctid IN
             (SELECT ctid FROM {table} WHERE {expired} LIMIT $2)"
    )
}

impl backend::Retention for PostgresBackend {
    async fn expire_batch(&self, cutoff: Micros) -> Result<(Expired, Vec<String>)> {
        let now = time::now();
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        let blobs = transaction
            .prepare_cached(&format!(
                "{} RETURNING file_name",
                delete_batch("blobs", "stored_at < $1")
            ))
            .await?;
        let dropped_files: Vec<String> = transaction
            .query(&blobs, &[&cutoff, &BATCH])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut deleted = [0; 7];
        for (count, (table, expired, bound)) in deleted.iter_mut().zip([
            ("jobs", "created_at < $1", cutoff),
            ("log_fragments", "stored_at < $1", cutoff),
            ("agents", "updated_at < $1", cutoff),
            ("queues", "updated_at < $1", cutoff),
            ("wait_times", "recorded_at < $1", cutoff),
            (
                "refresh_tokens",
                "last_accessed < $1",
                now - REFRESH_TOKEN_IDLE,
            ),
            ("secrets", "expires_at < $1", now),
        ]) {
            let delete = transaction
                .prepare_cached(&delete_batch(table, expired))
                .await?;
            *count = transaction.execute(&delete, &[&bound, &BATCH]).await? as usize;
        }
        transaction.commit().await?;
        let [jobs, fragments, agents, queues, wait_times, refresh_tokens, secrets] = deleted;
        let expired = Expired {
            jobs,
            fragments,
            files: dropped_files.len(),
            agents,
            other: queues + wait_times + refresh_tokens + secrets,
        };
        Ok((expired, dropped_files))
    }

    async fn referenced_files(&self) -> Result<HashSet<String>> {
        let client = self.connection().await?;
        let select = client.prepare_cached("SELECT file_name FROM blobs").await?;
        let rows = client.query(&select, &[]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn identity(&self) -> Result<(String, bool)> {
        let client = self.connection().await?;
        // A new database gets its id on first use (a copied lab keeps SQLite's); of two
        // servers starting at once, the first to write it gives it to both.
        let create = client
            .prepare_cached(
                "INSERT INTO store_meta (key, value) VALUES ('store_id', $1)
                 ON CONFLICT (key) DO NOTHING",
            )
            .await?;
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        client.execute(&create, &[&fresh]).await?;
        let select = client
            .prepare_cached(
                "SELECT value, EXISTS (SELECT 1 FROM blobs) FROM store_meta
                 WHERE key = 'store_id'",
            )
            .await?;
        let row = client.query_one(&select, &[]).await?;
        Ok((row.get(0), row.get(1)))
    }
}
