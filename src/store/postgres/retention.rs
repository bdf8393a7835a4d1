//! Expiry of old rows on PostgreSQL, with SQLite's rules (`store/retention.rs`), and the
//! store's identity, which its archive directory repeats (`store/blobs.rs`).

use std::collections::HashSet;

use super::PostgresBackend;
use crate::job::time::{self, Micros};
use crate::store::backend;
use crate::store::error::Result;
use crate::store::retention::{Expired, BATCH, REFRESH_TOKEN_IDLE};

/// A lock-out's length in the database's time unit.
const LOCKOUT_MICROS: i64 = crate::store::logins::LOCKOUT.as_micros() as i64;

/// The advisory lock of the server expiring now ("tf_expir"); any number no other user of
/// the database takes.
const EXPIRY_LOCK: i64 = 0x7466_5f65_7870_6972;

/// Deletes up to `$2` rows of `table` that `expired` (against `$1`) selects.
fn delete_batch(table: &str, expired: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE ctid IN
             (SELECT ctid FROM {table} WHERE {expired} LIMIT $2)"
    )
}

impl backend::Reachability for PostgresBackend {
    async fn answer(&self) -> Result<()> {
        self.connection().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

impl backend::Retention for PostgresBackend {
    async fn expire_batch(&self, cutoff: Micros) -> Result<Option<(Expired, Vec<String>)>> {
        let now = time::now();
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // One server expires at a time: the others would only race it for the same rows.
        let my_turn: bool = transaction
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&EXPIRY_LOCK])
            .await?
            .get(0);
        if !my_turn {
            return Ok(None);
        }
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
        let mut deleted = [0; 8];
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
            // Idle that long, a source's lock-out (if any) is over.
            ("login_failures", "last_attempt < $1", now - LOCKOUT_MICROS),
        ]) {
            let delete = transaction
                .prepare_cached(&delete_batch(table, expired))
                .await?;
            *count = transaction.execute(&delete, &[&bound, &BATCH]).await? as usize;
        }
        transaction.commit().await?;
        let [jobs, fragments, agents, queues, wait_times, refresh_tokens, secrets, logins] =
            deleted;
        let expired = Expired {
            jobs,
            fragments,
            files: dropped_files.len(),
            agents,
            other: queues + wait_times + refresh_tokens + secrets + logins,
        };
        Ok(Some((expired, dropped_files)))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Map;

    use super::*;
    use crate::job::Phase;
    use crate::store::backend::{Agents, Clients, Jobs, Logs, Retention, SealedSecret, Secrets};
    use crate::store::blobs::StoredBlob;
    use crate::store::clients::{Client, RefreshTokens};
    use crate::store::jobs::NewJob;
    use crate::store::logs::Fragment;
    use crate::store::postgres::testing;
    use crate::store::secrets::Expiry;

    #[tokio::test]
    async fn an_expiry_batch_counts_what_it_deleted_and_names_the_archives_it_dropped() {
        let (cluster, db) = testing::backend().await;
        let (store_id, has_archives) = db.identity().await.unwrap();
        assert_eq!((store_id.len(), has_archives), (32, false));
        assert_eq!(db.identity().await.unwrap().0, store_id, "kept");
        for id in ["old", "new"] {
            db.insert_job(NewJob::plain(id, "q", 0)).await.unwrap();
            let fragment = Fragment {
                fragment_number: 0,
                phase: Phase::Setup,
                timestamp: 0,
                log_data: "x".into(),
            };
            db.insert_fragments(id, "output", vec![fragment])
                .await
                .unwrap();
            let blob = StoredBlob {
                file_name: format!("{id}.tar"),
                size: 1,
            };
            db.record_artifact(id, blob).await.unwrap();
        }
        db.claim_job(&["q".to_string()], "").await.unwrap();
        db.report_agent("agent", Map::new(), Vec::new())
            .await
            .unwrap();
        db.advertise_queues([("q".to_string(), String::new())].into())
            .await
            .unwrap();
        db.save_client(Client::default(), None, RefreshTokens::Keep)
            .await
            .unwrap();
        db.store_refresh_token("t".into(), "", Duration::from_secs(60), None)
            .await
            .unwrap();
        let sealed = SealedSecret {
            nonce: Vec::new(),
            ciphertext: Vec::new(),
        };
        db.put_secret("", "s", sealed, Expiry::At(1)).await.unwrap();
        assert!(db.identity().await.unwrap().1, "an archive was recorded");
        assert_eq!(
            db.referenced_files().await.unwrap(),
            HashSet::from(["old.tar".to_string(), "new.tar".to_string()])
        );
        // "old" and everything else dates from long ago; "new" is kept.
        for aged in [
            "UPDATE jobs SET created_at = 0 WHERE job_id = 'old'",
            "UPDATE log_fragments SET stored_at = 0 WHERE job_id = 'old'",
            "UPDATE blobs SET stored_at = 0 WHERE job_id = 'old'",
            "UPDATE agents SET updated_at = 0",
            "UPDATE queues SET updated_at = 0",
            "UPDATE wait_times SET recorded_at = 0",
            "UPDATE refresh_tokens SET last_accessed = 0",
        ] {
            cluster.sql("tf", aged);
        }
        let (expired, files) = db.expire_batch(1).await.unwrap().expect("a turn");
        assert_eq!(
            expired,
            Expired {
                jobs: 1,
                fragments: 1,
                files: 1,
                agents: 1,
                other: 4,
            }
        );
        assert_eq!(files, ["old.tar"]);
        let (nothing_left, _) = db.expire_batch(1).await.unwrap().expect("a turn");
        assert_eq!(nothing_left, Expired::default());
        assert!(db.job_exists("new").await.unwrap());
        assert!(!db.job_exists("old").await.unwrap());
    }

    #[tokio::test]
    async fn a_server_leaves_expiry_to_the_one_expiring_now() {
        let (_cluster, db) = testing::backend().await;
        let mut other_server = db.connection().await.unwrap();
        let expiring = other_server.transaction().await.unwrap();
        expiring
            .execute("SELECT pg_advisory_xact_lock($1)", &[&EXPIRY_LOCK])
            .await
            .unwrap();
        assert!(db.expire_batch(1).await.unwrap().is_none(), "not its turn");
        expiring.commit().await.unwrap();
        assert!(db.expire_batch(1).await.unwrap().is_some(), "its turn now");
    }
}
