//! Jobs on PostgreSQL, with SQLite's rules (`store/jobs.rs`). A claim is one statement:
//! the best waiting job of the agent's queues is locked, skipping rows other claims hold
//! (`SKIP LOCKED`), made `running` and its wait recorded, so no two agents get the same
//! job and no claim waits on another. Writes that read before they write lock the job's
//! row first (`FOR UPDATE`), as SQLite's single writer serialises them.

use deadpool_postgres::GenericClient;
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{claimable, object, PostgresBackend};
use crate::job::outcome::KillReason;
use crate::job::time;
use crate::job::{JobState, Outcome, Phase};
use crate::store::backend::{self, AttachmentRecord};
use crate::store::blobs::{BlobKind, StoredBlob};
use crate::store::error::Result;
use crate::store::jobs::{
    read_outcome, AttachmentGate, ClaimedJob, JobFilter, JobSummary, NewJob, ResultUpdate,
    ResultView,
};
use crate::store::logs::KILL_LINE_WINDOW;
use crate::store::pages::JobRecord;

/// The columns `summary` reads; the statuses only for a completed job without a stored
/// outcome.
const SUMMARY_COLUMNS: &str = "job_id, queue, state, created_at, outcome,
    CASE WHEN outcome IS NULL AND state IN ('complete', 'completed') THEN status::text END";

/// One line of a listing, from a row of `SUMMARY_COLUMNS`.
fn summary(row: &Row) -> JobSummary {
    let state: String = row.get(2);
    let status: Option<&str> = row.get(5);
    let outcome = read_outcome(&state, row.get(4), || {
        status.and_then(|text| serde_json::from_str::<Map<String, Value>>(text).ok())
    });
    JobSummary {
        job_id: row.get(0),
        queue: row.get(1),
        state,
        created_at: row.get(3),
        outcome,
    }
}

impl backend::Jobs for PostgresBackend {
    async fn insert_job(&self, job: NewJob) -> Result<()> {
        self.writer.submit(job).await
    }

    /// Queues known to hold no claimable job are answered here, without the database.
    async fn claim_job(&self, queues: &[String], agent: &str) -> Result<Option<ClaimedJob>> {
        let Some(seen) = self.claimable.look(queues) else {
            return Ok(None);
        };
        if let Some(job) = self.writer.claim(queues, agent).await? {
            return Ok(Some(job));
        }
        let client = self.connection().await?;
        let still_claimable = claimable::still_claimable(&client, queues).await?;
        self.claimable.found_none(queues, seen, &still_claimable);
        Ok(None)
    }

    async fn job_definition(&self, job_id: &str) -> Result<Option<Map<String, Value>>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached("SELECT job_data::text FROM jobs WHERE job_id = $1")
            .await?;
        let row = client.query_opt(&select, &[&job_id]).await?;
        row.map(|row| Ok(serde_json::from_str(row.get(0))?))
            .transpose()
    }

    async fn job_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
            .await?;
        let rows = client.query(&select, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get::<_, i64>(2) as u64))
            .collect())
    }

    async fn search_jobs(&self, filter: JobFilter) -> Result<Vec<JobSummary>> {
        let (sql, values) = search(filter);
        let client = self.connection().await?;
        let select = client.prepare_cached(&sql).await?;
        let values: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = client.query(&select, &values).await?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn queue_jobs(&self, queue: &str) -> Result<Vec<JobSummary>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM jobs WHERE queue = $1 ORDER BY seq"
            ))
            .await?;
        let rows = client.query(&select, &[&queue]).await?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn agent_jobs(&self, agent: &str, limit: u32) -> Result<Vec<JobSummary>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM jobs WHERE agent = $1 ORDER BY seq DESC LIMIT $2"
            ))
            .await?;
        let rows = client.query(&select, &[&agent, &i64::from(limit)]).await?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn cancel_job(&self, job_id: &str) -> Result<bool> {
        let client = self.connection().await?;
        let cancel = client
            .prepare_cached(
                "UPDATE jobs SET state = 'cancelled'
                 WHERE job_id = $1 AND NOT state = ANY ($2)",
            )
            .await?;
        let finished = &JobState::FINISHED_NAMES[..];
        Ok(client.execute(&cancel, &[&job_id, &finished]).await? > 0)
    }

    async fn queue_position(&self, job_id: &str) -> Result<Option<u64>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(
                "SELECT (SELECT count(*) FROM jobs AS ahead
                         WHERE ahead.queue = me.queue AND ahead.state = 'waiting'
                           AND (ahead.priority > me.priority
                                OR (ahead.priority = me.priority AND ahead.seq < me.seq)))
                 FROM jobs AS me WHERE me.job_id = $1 AND me.state = 'waiting'",
            )
            .await?;
        let row = client.query_opt(&select, &[&job_id]).await?;
        Ok(row.map(|row| row.get::<_, i64>(0) as u64))
    }

    async fn attachment_gate(&self, job_id: &str) -> Result<AttachmentGate> {
        attachment_gate(&self.connection().await?, job_id, "").await
    }

    async fn record_attachments(&self, job_id: &str, blob: StoredBlob) -> Result<AttachmentRecord> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // Locked: of two uploads at once, the second sees the first's archive.
        let gate = attachment_gate(&transaction, job_id, "FOR UPDATE").await?;
        if !matches!(gate, AttachmentGate::Open { .. }) {
            let stored = blob_name(&transaction, job_id, BlobKind::Attachments).await?;
            return Ok(AttachmentRecord::Refused { gate, stored });
        }
        let replaced = record_blob(&transaction, job_id, BlobKind::Attachments, &blob).await?;
        let release = transaction
            .prepare_cached(
                "UPDATE jobs SET attachments = 'complete' WHERE job_id = $1 RETURNING queue",
            )
            .await?;
        let queue: String = transaction.query_one(&release, &[&job_id]).await?.get(0);
        transaction.commit().await?;
        // The gate was open, so the job waits: now it can be claimed.
        self.claimable.mark(&queue);
        Ok(AttachmentRecord::Recorded { queue, replaced })
    }

    async fn job_exists(&self, job_id: &str) -> Result<bool> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE job_id = $1)")
            .await?;
        Ok(client.query_one(&select, &[&job_id]).await?.get(0))
    }

    async fn record_artifact(
        &self,
        job_id: &str,
        blob: StoredBlob,
    ) -> Result<(bool, Option<String>)> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // Locked, so that of two uploads at once each replaces the one before it.
        let lock = transaction
            .prepare_cached("SELECT 1 FROM jobs WHERE job_id = $1 FOR UPDATE")
            .await?;
        if transaction.query_opt(&lock, &[&job_id]).await?.is_none() {
            return Ok((false, Some(blob.file_name)));
        }
        let replaced = record_blob(&transaction, job_id, BlobKind::Artifact, &blob).await?;
        transaction.commit().await?;
        Ok((true, replaced))
    }

    async fn update_result(&self, job_id: &str, update: ResultUpdate) -> Result<Option<String>> {
        let completes = update
            .job_state
            .as_deref()
            .is_some_and(JobState::is_complete_name);
        if completes {
            self.complete_job(job_id, update).await?;
            Ok(None)
        } else {
            self.report_progress(job_id, update).await
        }
    }

    async fn result(&self, job_id: &str) -> Result<Option<ResultView>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(
                "SELECT state, status::text, device_info::text, outcome
                 FROM jobs WHERE job_id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&select, &[&job_id]).await? else {
            return Ok(None);
        };
        let job_state: String = row.get(0);
        let status = object(row.get(1))?;
        let device_info: Option<&str> = row.get(2);
        Ok(Some(ResultView {
            outcome: read_outcome(&job_state, row.get(3), || Some(&status)),
            job_state,
            status,
            device_info: device_info.map(serde_json::from_str).transpose()?,
        }))
    }

    async fn job_record(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(
                "SELECT job_id, queue, state, created_at, started_at, job_data::text,
                        status::text, device_info::text,
                        EXISTS (SELECT 1 FROM blobs
                                WHERE blobs.job_id = jobs.job_id AND kind = 'artifact'),
                        agent, outcome
                 FROM jobs WHERE job_id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&select, &[&job_id]).await? else {
            return Ok(None);
        };
        let state: String = row.get(2);
        let status = object(row.get(6))?;
        let device_info: Option<&str> = row.get(7);
        Ok(Some(JobRecord {
            outcome: read_outcome(&state, row.get(10), || Some(&status)),
            job_id: row.get(0),
            queue: row.get(1),
            state,
            created_at: row.get(3),
            started_at: row.get(4),
            definition: serde_json::from_str(row.get(5))?,
            status,
            device_info: device_info.map(serde_json::from_str).transpose()?,
            has_artifact: row.get(8),
            agent: row.get(9),
        }))
    }

    async fn blob_name(&self, job_id: &str, kind: BlobKind) -> Result<Option<String>> {
        blob_name(&self.connection().await?, job_id, kind).await
    }
}

impl PostgresBackend {
    /// A report of a job in progress, in one statement; the job's queue if the report
    /// put it back to `waiting`.
    async fn report_progress(&self, job_id: &str, update: ResultUpdate) -> Result<Option<String>> {
        let (status, device_info) = update.texts()?;
        let client = self.connection().await?;
        let report = client
            .prepare_cached(
                // A cancelled job only leaves `cancelled` for the agent's final `complete`
                // (complete_job): a phase report racing the cancel must not undo it. A job
                // given back to its queue is no longer its agent's.
                "UPDATE jobs SET state = CASE WHEN state = 'cancelled' THEN state
                                              ELSE coalesce($2, state) END,
                                 agent = CASE WHEN state <> 'cancelled' AND $2 = 'waiting'
                                              THEN NULL ELSE agent END,
                                 status = coalesce($3::text::json, status),
                                 device_info = coalesce($4::text::json, device_info)
                 WHERE job_id = $1 RETURNING queue, state",
            )
            .await?;
        let row = client
            .query_opt(
                &report,
                &[&job_id, &update.job_state, &status, &device_info],
            )
            .await?;
        let requeued: Option<String> = row
            .filter(|row| row.get::<_, &str>(1) == JobState::Waiting.as_str())
            .map(|row| row.get(0));
        if let Some(queue) = &requeued {
            self.claimable.mark(queue);
        }
        Ok(requeued)
    }

    /// The agent's final report: the job becomes `complete` (also from `cancelled`, as
    /// with the reference) and its outcome is worked out, once. A job cancelled while it
    /// ran keeps `cancelled` as its outcome; a resent final report changes nothing.
    async fn complete_job(&self, job_id: &str, update: ResultUpdate) -> Result<()> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        let select = transaction
            .prepare_cached(
                "SELECT state, status::text, outcome FROM jobs WHERE job_id = $1 FOR UPDATE",
            )
            .await?;
        let Some(row) = transaction.query_opt(&select, &[&job_id]).await? else {
            return Ok(());
        };
        let previous_state: &str = row.get(0);
        let outcome = match row.get::<_, Option<String>>(2) {
            Some(outcome) if JobState::is_complete_name(previous_state) => Some(outcome),
            _ => {
                let stored_statuses;
                let statuses = match &update.status {
                    Some(statuses) => statuses,
                    None => {
                        stored_statuses = object(row.get(1))?;
                        &stored_statuses
                    }
                };
                let ended_as = if previous_state == JobState::Cancelled.as_str() {
                    "cancelled"
                } else {
                    "complete"
                };
                // `Outcome::of` asks about a killed phase synchronously: ask it once to
                // learn which phase, read that phase's output, and ask again.
                let mut asked = None;
                let mut outcome = Outcome::of(ended_as, statuses, |phase| {
                    asked = Some(phase);
                    None
                });
                if let Some(phase) = asked {
                    let reason = kill_reason_in_output(&transaction, job_id, phase).await?;
                    outcome = Outcome::of(ended_as, statuses, |_| reason);
                }
                outcome.map(|outcome| outcome.encode())
            }
        };
        let (status, device_info) = update.texts()?;
        let complete = transaction
            .prepare_cached(
                "UPDATE jobs SET state = $2, status = coalesce($3::text::json, status),
                                 device_info = coalesce($4::text::json, device_info),
                                 outcome = $5
                 WHERE job_id = $1",
            )
            .await?;
        transaction
            .execute(
                &complete,
                &[&job_id, &update.job_state, &status, &device_info, &outcome],
            )
            .await?;
        transaction.commit().await?;
        Ok(())
    }
}

/// Why the agent killed `phase` of job `job_id`, if the end of its output says.
async fn kill_reason_in_output(
    db: &impl GenericClient,
    job_id: &str,
    phase: Phase,
) -> Result<Option<KillReason>> {
    let newest_first = db
        .prepare_cached(
            "SELECT log_data FROM log_fragments
             WHERE job_id = $1 AND log_type = 'output' AND phase = $2
             ORDER BY fragment_number DESC LIMIT $3",
        )
        .await?;
    let rows = db
        .query(
            &newest_first,
            &[&job_id, &phase.as_str(), &KILL_LINE_WINDOW],
        )
        .await?;
    Ok(rows.iter().find_map(|row| KillReason::found_in(row.get(0))))
}

/// Whether a job may receive its attachments archive; `lock` (`FOR UPDATE`) holds its
/// row for the rest of a transaction.
async fn attachment_gate(
    db: &impl GenericClient,
    job_id: &str,
    lock: &str,
) -> Result<AttachmentGate> {
    let select = db
        .prepare_cached(&format!(
            "SELECT attachments, client_id FROM jobs WHERE job_id = $1 AND state = 'waiting' {lock}"
        ))
        .await?;
    let row = db.query_opt(&select, &[&job_id]).await?;
    Ok(AttachmentGate::of(row.map(|row| (row.get(0), row.get(1)))))
}

/// The file holding a job's archive of `kind`, if one was stored.
async fn blob_name(
    db: &impl GenericClient,
    job_id: &str,
    kind: BlobKind,
) -> Result<Option<String>> {
    let select = db
        .prepare_cached("SELECT file_name FROM blobs WHERE job_id = $1 AND kind = $2")
        .await?;
    let row = db.query_opt(&select, &[&job_id, &kind.as_str()]).await?;
    Ok(row.map(|row| row.get(0)))
}

/// Points a job's archive of `kind` at a new file; the file it replaced. The job's row
/// is locked by the caller.
async fn record_blob(
    db: &impl GenericClient,
    job_id: &str,
    kind: BlobKind,
    blob: &StoredBlob,
) -> Result<Option<String>> {
    let replaced = blob_name(db, job_id, kind).await?;
    let upsert = db
        .prepare_cached(
            "INSERT INTO blobs (job_id, kind, file_name, size, stored_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, kind) DO UPDATE SET file_name = excluded.file_name,
                 size = excluded.size, stored_at = excluded.stored_at",
        )
        .await?;
    db.execute(
        &upsert,
        &[
            &job_id,
            &kind.as_str(),
            &blob.file_name,
            &(blob.size as i64),
            &time::now(),
        ],
    )
    .await?;
    Ok(replaced)
}

/// A search's statement and its values (`$1`, `$2`, … in order). Few filters combine,
/// so the few statements they make are prepared once each.
fn search(filter: JobFilter) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut bind = |value: Box<dyn ToSql + Sync + Send>| {
        values.push(value);
        format!("${}", values.len())
    };
    let mut conditions = Vec::new();
    if !filter.tags.is_empty() {
        let wanted = filter.distinct_tags() as i64;
        // Tags that are not a list (never accepted) match nothing; SQLite's json_each
        // would take a lone string as a list of one.
        let matching = format!(
            "(SELECT count(DISTINCT tag) FROM json_array_elements_text(
                  CASE WHEN json_typeof(job_data -> 'tags') = 'array' THEN job_data -> 'tags' END
              ) AS tag WHERE tag = ANY ({}))",
            bind(Box::new(filter.tags))
        );
        conditions.push(if filter.match_all_tags {
            format!("{matching} = {}", bind(Box::new(wanted)))
        } else {
            format!("{matching} > 0")
        });
    }
    if filter.active {
        conditions.push("state NOT IN ('cancelled', 'complete', 'completed')".into());
    } else if !filter.states.is_empty() {
        conditions.push(format!("state = ANY ({})", bind(Box::new(filter.states))));
    }
    if let Some(queue) = filter.queue {
        conditions.push(format!("queue = {}", bind(Box::new(queue))));
    }
    if let Some(prefix) = filter.id_prefix {
        // The caller keeps prefixes to hex digits and dashes, so no LIKE wildcard slips in.
        conditions.push(format!(
            "job_id LIKE {}",
            bind(Box::new(format!("{prefix}%")))
        ));
    }
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let order = if filter.newest_first { "DESC" } else { "ASC" };
    // A NULL limit is no limit (LIMIT ALL).
    let limit = filter.limit.map(|limit| limit.min(i64::MAX as u64) as i64);
    let offset = filter.offset.min(i64::MAX as u64) as i64;
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM jobs {where_clause} ORDER BY seq {order} LIMIT {} OFFSET {}",
        bind(Box::new(limit)),
        bind(Box::new(offset))
    );
    (sql, values)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use crate::store::error::StoreError;
    use std::sync::Arc;

    use serde_json::{json, Map};

    use super::*;
    use crate::job::outcome::Timeout;
    use crate::store::backend::{Jobs, Logs};
    use crate::store::logs::Fragment;
    use crate::store::postgres::testing;

    fn ids(jobs: Vec<JobSummary>) -> Vec<String> {
        jobs.into_iter().map(|job| job.job_id).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_take_every_job_exactly_once_and_record_each_wait() {
        let (cluster, db) = testing::backend().await;
        for n in 0..300 {
            db.insert_job(NewJob::plain(&format!("job-{n}"), "q", 0))
                .await
                .expect("insert");
        }
        let db = Arc::new(db);
        let start = Arc::new(tokio::sync::Barrier::new(8));
        let claimers: Vec<_> = (0..8)
            .map(|agent| {
                let (db, start) = (db.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let mut mine = Vec::new();
                    let queues = ["q".to_string()];
                    let agent = format!("a{agent}");
                    while let Some(job) = db.claim_job(&queues, &agent).await.expect("claim") {
                        mine.push(job.job_id);
                    }
                    mine
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for claimer in claimers {
            for id in claimer.await.expect("claimer") {
                assert!(seen.insert(id.clone()), "{id} was claimed twice");
            }
        }
        assert_eq!(seen.len(), 300, "every job was claimed");
        assert_eq!(cluster.sql("tf", "SELECT count(*) FROM wait_times"), "300");
        assert_eq!(
            cluster.sql("tf", "SELECT count(*) FROM jobs WHERE state = 'running'"),
            "300"
        );
    }

    #[tokio::test]
    async fn claims_follow_priority_exclusions_and_pending_archives() {
        let (cluster, db) = testing::backend().await;
        let mut low = NewJob::plain("low", "q", 0);
        low.data
            .insert("note".into(), json!("keys keep their order"));
        db.insert_job(low).await.expect("insert");
        db.insert_job(NewJob::plain("high", "other", 5))
            .await
            .expect("insert");
        let mut excluded = NewJob::plain("not-for-a1", "q", 9);
        excluded.exclude_agents = vec!["a1".into()];
        db.insert_job(excluded).await.expect("insert");
        let mut pending = NewJob::plain("archive-pending", "q", 9);
        pending.awaits_attachments = true;
        db.insert_job(pending).await.expect("insert");
        let duplicate = db.insert_job(NewJob::plain("low", "q", 0)).await;
        assert!(matches!(duplicate, Err(StoreError::DuplicateJob(_))));

        let queues = ["q".to_string(), "other".to_string()];
        let mut order = Vec::new();
        for _ in 0..3 {
            let claimed = db.claim_job(&queues, "a1").await.expect("claim");
            order.push(claimed.map(|job| job.job_id).unwrap_or_default());
        }
        assert_eq!(
            order,
            ["high", "low", ""],
            "a1 never gets its exclusion or a pending job"
        );
        let other = db
            .claim_job(&queues, "a2")
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(other.job_id, "not-for-a1");
        assert_eq!(other.data["job_queue"], json!("q"));
        assert_eq!(
            cluster.sql("tf", "SELECT job_data::text FROM jobs WHERE job_id = 'low'"),
            r#"{"job_queue":"q","note":"keys keep their order"}"#
        );
    }

    #[tokio::test]
    async fn a_killed_phase_whose_output_says_timeout_completes_as_timed_out_once() {
        let (_cluster, db) = testing::backend().await;
        db.insert_job(NewJob::plain("j", "q", 0))
            .await
            .expect("insert");
        db.claim_job(&["q".to_string()], "a").await.expect("claim");
        let line = |n: i64, text: &str| Fragment {
            fragment_number: n,
            phase: Phase::Test,
            timestamp: n,
            log_data: text.to_string(),
        };
        let fragments = vec![
            line(0, "running\n"),
            line(1, "ERROR: Output timeout reached! (600s)\n"),
            line(2, "killed\n"),
        ];
        db.insert_fragments("j", "output", fragments)
            .await
            .expect("log");
        let report = |state: &str, test: i64| ResultUpdate {
            job_state: Some(state.to_string()),
            status: Some(Map::from_iter([
                ("setup".to_string(), json!(0)),
                ("test".to_string(), json!(test)),
            ])),
            device_info: None,
        };
        assert_eq!(
            db.update_result("j", report("test", 0)).await.unwrap(),
            None
        );
        assert_eq!(
            db.update_result("j", report("complete", 247))
                .await
                .unwrap(),
            None
        );
        let timed_out = Some(Outcome::TimedOut {
            phase: Phase::Test,
            timeout: Timeout::Output,
        });
        let result = db.result("j").await.unwrap().expect("a result");
        assert_eq!(
            (result.job_state.as_str(), result.outcome),
            ("complete", timed_out)
        );
        // A resent final report does not work the outcome out again.
        db.update_result("j", report("complete", 1)).await.unwrap();
        assert_eq!(db.result("j").await.unwrap().unwrap().outcome, timed_out);
        let listed = db.queue_jobs("q").await.unwrap();
        assert_eq!(listed[0].outcome, timed_out);
    }

    #[tokio::test]
    async fn a_report_back_to_waiting_gives_the_queue_and_frees_the_job_from_its_agent() {
        let (_cluster, db) = testing::backend().await;
        db.insert_job(NewJob::plain("j", "q", 0)).await.unwrap();
        db.claim_job(&["q".to_string()], "a").await.unwrap();
        assert_eq!(db.agent_jobs("a", 5).await.unwrap().len(), 1);
        let back = ResultUpdate {
            job_state: Some("waiting".into()),
            ..ResultUpdate::default()
        };
        assert_eq!(db.update_result("j", back).await.unwrap(), Some("q".into()));
        assert!(db.agent_jobs("a", 5).await.unwrap().is_empty());
        assert_eq!(db.queue_position("j").await.unwrap(), Some(0));
        assert!(db.cancel_job("j").await.unwrap());
        assert!(!db.cancel_job("j").await.unwrap(), "cancelled already");
        let ghost = ResultUpdate {
            job_state: Some("complete".into()),
            ..ResultUpdate::default()
        };
        db.update_result("nobody", ghost).await.expect("ignored");
    }

    #[tokio::test]
    async fn searches_filter_by_tags_states_queue_and_prefix_and_page_in_order() {
        let (_cluster, db) = testing::backend().await;
        let tagged = [
            ("a1", "q", json!(["x", "y"])),
            ("a2", "q", json!(["x"])),
            ("b1", "r", json!(["y", "z"])),
            ("b2", "r", json!("x")),
        ];
        for (id, queue, tags) in tagged {
            let mut new = NewJob::plain(id, queue, 0);
            new.data.insert("tags".into(), tags);
            db.insert_job(new).await.unwrap();
        }
        db.cancel_job("a2").await.unwrap();
        let search = |filter: JobFilter| db.search_jobs(filter);
        let tags = |tags: &[&str]| tags.iter().map(|tag| tag.to_string()).collect();
        let any = search(JobFilter {
            tags: tags(&["x", "z"]),
            ..JobFilter::default()
        });
        assert_eq!(
            ids(any.await.unwrap()),
            ["a1", "a2", "b1"],
            "tags not a list match nothing"
        );
        let all = search(JobFilter {
            tags: tags(&["x", "y", "x"]),
            match_all_tags: true,
            ..JobFilter::default()
        });
        assert_eq!(ids(all.await.unwrap()), ["a1"]);
        let active = search(JobFilter {
            active: true,
            newest_first: true,
            ..JobFilter::default()
        });
        assert_eq!(ids(active.await.unwrap()), ["b2", "b1", "a1"]);
        let cancelled = search(JobFilter {
            states: vec!["cancelled".into()],
            ..JobFilter::default()
        });
        assert_eq!(ids(cancelled.await.unwrap()), ["a2"]);
        let prefix = search(JobFilter {
            id_prefix: Some("b".into()),
            queue: Some("r".into()),
            ..JobFilter::default()
        });
        assert_eq!(ids(prefix.await.unwrap()), ["b1", "b2"]);
        let page = search(JobFilter {
            limit: Some(2),
            offset: 1,
            ..JobFilter::default()
        });
        assert_eq!(ids(page.await.unwrap()), ["a2", "b1"]);
        let rest = search(JobFilter {
            offset: 3,
            ..JobFilter::default()
        });
        assert_eq!(ids(rest.await.unwrap()), ["b2"]);
    }

    #[tokio::test]
    async fn the_first_attachments_archive_opens_the_gate_and_an_artifact_replaces_its_own() {
        let (_cluster, db) = testing::backend().await;
        let mut pending = NewJob::plain("j", "q", 0);
        pending.awaits_attachments = true;
        pending.submitter = Some("me".into());
        db.insert_job(pending).await.unwrap();
        let me = Some("me".to_string());
        let archive = |name: &str| StoredBlob {
            file_name: name.into(),
            size: 1,
        };
        assert_eq!(
            db.attachment_gate("j").await.unwrap(),
            AttachmentGate::Open {
                submitter: me.clone()
            }
        );
        assert!(db
            .claim_job(&["q".to_string()], "a")
            .await
            .unwrap()
            .is_none());
        let AttachmentRecord::Recorded { queue, replaced } =
            db.record_attachments("j", archive("first")).await.unwrap()
        else {
            panic!("the gate was open");
        };
        assert_eq!((queue.as_str(), replaced), ("q", None));
        let AttachmentRecord::Refused { gate, stored } =
            db.record_attachments("j", archive("second")).await.unwrap()
        else {
            panic!("the first archive stays");
        };
        assert_eq!(gate, AttachmentGate::AlreadyComplete { submitter: me });
        assert_eq!(stored.as_deref(), Some("first"));
        assert_eq!(
            db.blob_name("j", BlobKind::Attachments)
                .await
                .unwrap()
                .as_deref(),
            Some("first")
        );
        assert!(db
            .claim_job(&["q".to_string()], "a")
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            db.attachment_gate("j").await.unwrap(),
            AttachmentGate::NotWaiting
        );

        assert_eq!(
            db.record_artifact("j", archive("a1")).await.unwrap(),
            (true, None)
        );
        assert_eq!(
            db.record_artifact("j", archive("a2")).await.unwrap(),
            (true, Some("a1".into()))
        );
        assert_eq!(
            db.record_artifact("gone", archive("a3")).await.unwrap(),
            (false, Some("a3".into()))
        );
        assert_eq!(
            db.job_counts().await.unwrap(),
            [("q".to_string(), "running".to_string(), 1)]
        );
        let definition = db.job_definition("j").await.unwrap().expect("stored");
        assert_eq!(definition["job_queue"], json!("q"));
        assert!(db.job_definition("gone").await.unwrap().is_none());
    }
}
