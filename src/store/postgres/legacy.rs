//! The Redis-era result API on PostgreSQL, with SQLite's rules (`store/legacy.rs`):
//! result documents merged key by key, and raw output streams stored as log fragments
//! read through a cursor. Each write locks the job's row, so two at once take turns.

use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};

use super::{object, PostgresBackend};
use crate::job::time;
use crate::store::backend;
use crate::store::error::Result;
use crate::store::legacy::{phase_of_state, LegacyResult};

impl backend::Legacy for PostgresBackend {
    async fn merge_legacy_result(&self, job_id: &str, result: LegacyResult) -> Result<()> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        let lock = transaction
            .prepare_cached("SELECT status::text FROM jobs WHERE job_id = $1 FOR UPDATE")
            .await?;
        // Unknown jobs are ignored, like every result report.
        let Some(job) = transaction.query_opt(&lock, &[&job_id]).await? else {
            return Ok(());
        };
        if !result.statuses.is_empty() {
            let mut status = Value::Object(object(job.get(0))?);
            merge_patch(&mut status, Value::Object(result.statuses));
            let update = transaction
                .prepare_cached("UPDATE jobs SET status = $2::text::json WHERE job_id = $1")
                .await?;
            transaction
                .execute(&update, &[&job_id, &status.to_string()])
                .await?;
        }
        if !result.document.is_empty() {
            let mut document = read_document(&transaction, job_id).await?;
            document.extend(result.document);
            let upsert = transaction
                .prepare_cached(
                    "INSERT INTO legacy_results (job_id, document) VALUES ($1, $2::text::json)
                     ON CONFLICT (job_id) DO UPDATE SET document = excluded.document",
                )
                .await?;
            transaction
                .execute(&upsert, &[&job_id, &Value::Object(document).to_string()])
                .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn legacy_result(&self, job_id: &str) -> Result<Map<String, Value>> {
        read_document(&self.connection().await?, job_id).await
    }

    async fn append_legacy_output(
        &self,
        job_id: &str,
        log_type: &str,
        text: String,
    ) -> Result<bool> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // Locked, so that two appends at once do not take the same number.
        let lock = transaction
            .prepare_cached("SELECT state FROM jobs WHERE job_id = $1 FOR UPDATE")
            .await?;
        let Some(job) = transaction.query_opt(&lock, &[&job_id]).await? else {
            return Ok(false);
        };
        let insert = transaction
            .prepare_cached(
                "INSERT INTO log_fragments
                     (job_id, log_type, fragment_number, phase, timestamp, log_data, stored_at)
                 VALUES ($1, $2, (SELECT coalesce(max(fragment_number), -1) + 1
                                  FROM log_fragments WHERE job_id = $1 AND log_type = $2),
                         $3, $4, $5, $4)",
            )
            .await?;
        transaction
            .execute(
                &insert,
                &[
                    &job_id,
                    &log_type,
                    &phase_of_state(job.get(0)),
                    &time::now(),
                    &text,
                ],
            )
            .await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn take_legacy_output(&self, job_id: &str, log_type: &str) -> Result<String> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // Locked while the cursor moves, so two readers never get the same text; the
        // text itself, possibly large, is read after.
        let lock = transaction
            .prepare_cached("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE")
            .await?;
        if transaction.query_opt(&lock, &[&job_id]).await?.is_none() {
            return Ok(String::new());
        }
        let range = transaction
            .prepare_cached(
                "SELECT coalesce((SELECT next_fragment FROM legacy_stream_reads
                                  WHERE job_id = $1 AND log_type = $2), 0),
                        (SELECT max(fragment_number) FROM log_fragments
                         WHERE job_id = $1 AND log_type = $2)",
            )
            .await?;
        let row = transaction.query_one(&range, &[&job_id, &log_type]).await?;
        let first: i64 = row.get(0);
        let Some(last) = row.get::<_, Option<i64>>(1).filter(|last| *last >= first) else {
            return Ok(String::new());
        };
        let advance = transaction
            .prepare_cached(
                "INSERT INTO legacy_stream_reads (job_id, log_type, next_fragment)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (job_id, log_type) DO UPDATE SET next_fragment = excluded.next_fragment",
            )
            .await?;
        transaction
            .execute(&advance, &[&job_id, &log_type, &(last + 1)])
            .await?;
        transaction.commit().await?;
        let text = client
            .prepare_cached(
                "SELECT string_agg(log_data, '' ORDER BY fragment_number) FROM log_fragments
                 WHERE job_id = $1 AND log_type = $2 AND fragment_number BETWEEN $3 AND $4",
            )
            .await?;
        let row = client
            .query_one(&text, &[&job_id, &log_type, &first, &last])
            .await?;
        Ok(row.get::<_, Option<String>>(0).unwrap_or_default())
    }
}

/// The free-form keys old agents posted for a job (empty when none).
async fn read_document(db: &impl GenericClient, job_id: &str) -> Result<Map<String, Value>> {
    let select = db
        .prepare_cached("SELECT document::text FROM legacy_results WHERE job_id = $1")
        .await?;
    let row = db.query_opt(&select, &[&job_id]).await?;
    object(row.as_ref().map(|row| row.get(0)))
}

/// Applies a JSON merge patch (RFC 7396), as SQLite's `json_patch`: a null removes its
/// key, an object merges into the object it meets, anything else replaces.
fn merge_patch(target: &mut Value, patch: Value) {
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(&key);
            } else {
                merge_patch(target.entry(key).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::backend::{Jobs, Legacy, Logs};
    use crate::store::jobs::{NewJob, ResultUpdate};
    use crate::store::postgres::testing;

    #[tokio::test]
    async fn each_legacy_read_gets_only_the_text_stored_since_the_last() {
        let (_cluster, db) = testing::backend().await;
        assert!(!db
            .append_legacy_output("j", "output", "lost".into())
            .await
            .unwrap());
        db.insert_job(NewJob::plain("j", "q", 0)).await.unwrap();
        assert_eq!(db.take_legacy_output("j", "output").await.unwrap(), "");
        assert!(db
            .append_legacy_output("j", "output", "one ".into())
            .await
            .unwrap());
        let provisioning = ResultUpdate {
            job_state: Some("provision".into()),
            ..ResultUpdate::default()
        };
        db.update_result("j", provisioning).await.unwrap();
        assert!(db
            .append_legacy_output("j", "output", "two ".into())
            .await
            .unwrap());
        assert_eq!(
            db.take_legacy_output("j", "output").await.unwrap(),
            "one two "
        );
        assert_eq!(db.take_legacy_output("j", "output").await.unwrap(), "");
        db.append_legacy_output("j", "output", "three".into())
            .await
            .unwrap();
        assert_eq!(db.take_legacy_output("j", "output").await.unwrap(), "three");
        let spans = db.phase_spans("j").await.unwrap();
        let phases: Vec<&str> = spans.iter().map(|span| span.phase.as_str()).collect();
        assert_eq!(
            phases,
            ["setup", "provision"],
            "in the phase the job was in"
        );

        let posted = |statuses: serde_json::Value, document: serde_json::Value| LegacyResult {
            statuses: serde_json::from_value(statuses).unwrap(),
            document: serde_json::from_value(document).unwrap(),
        };
        db.merge_legacy_result("j", posted(json!({"setup": 0}), json!({"a": 1, "b": 1})))
            .await
            .unwrap();
        db.merge_legacy_result("j", posted(json!({"test": 1}), json!({"b": 2})))
            .await
            .unwrap();
        db.merge_legacy_result("gone", posted(json!({"test": 1}), json!({"b": 3})))
            .await
            .unwrap();
        assert_eq!(
            Value::Object(db.legacy_result("j").await.unwrap()),
            json!({"a": 1, "b": 2})
        );
        let status = db.result("j").await.unwrap().unwrap().status;
        assert_eq!(Value::Object(status), json!({"setup": 0, "test": 1}));
        assert!(db.legacy_result("gone").await.unwrap().is_empty());
    }

    #[test]
    fn a_merge_patch_removes_nulls_and_merges_objects() {
        let mut target = json!({"a": 1, "b": {"c": 1, "d": 2}, "e": 3});
        merge_patch(
            &mut target,
            json!({"a": null, "b": {"c": null, "x": 9}, "e": [1]}),
        );
        assert_eq!(target, json!({"b": {"d": 2, "x": 9}, "e": [1]}));
    }
}
