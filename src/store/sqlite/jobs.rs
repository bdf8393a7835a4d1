//! Jobs on SQLite: the submit, the atomic claim (answered from the `claimable` view when
//! no polled queue can have a job), reports and outcomes, archives, listings.

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::logs::kill_reason_in_output;
use super::SqliteBackend;
use crate::job::time::{self, Micros};
use crate::job::{JobState, Outcome};
use crate::store::backend::{self, AttachmentRecord};
use crate::store::blobs::{BlobKind, StoredBlob};
use crate::store::error::{Result, StoreError};
use crate::store::jobs::{
    read_outcome, statuses, AttachmentGate, ClaimedJob, JobFilter, JobSummary, NewJob,
    ResultUpdate, ResultView,
};
use crate::store::pages::JobRecord;

/// The statuses are read only for a completed job without a stored outcome.
const SUMMARY_COLUMNS: &str = "job_id, queue, state, created_at, outcome,
    CASE WHEN outcome IS NULL AND state IN ('complete', 'completed') THEN status END";

fn summary(row: &Row) -> rusqlite::Result<JobSummary> {
    let state: String = row.get(2)?;
    // Read in place: a listing reads these for every row.
    let text =
        |column| Ok::<_, rusqlite::Error>(row.get_ref(column)?.as_str_or_null().ok().flatten());
    let (stored, status) = (text(4)?, text(5)?);
    let outcome = read_outcome(&state, stored, || statuses(status));
    Ok(JobSummary {
        job_id: row.get(0)?,
        queue: row.get(1)?,
        state,
        created_at: row.get(3)?,
        outcome,
    })
}

fn json_object(text: Option<String>) -> Result<Map<String, Value>> {
    match text {
        Some(text) => Ok(serde_json::from_str(&text)?),
        None => Ok(Map::new()),
    }
}

impl backend::Jobs for SqliteBackend {
    async fn insert_job(&self, job: NewJob) -> Result<()> {
        let claimable = (!job.awaits_attachments).then(|| self.claimable.clone());
        self.writer
            .write_one_statement(move |tx| {
                let exclude = (!job.exclude_agents.is_empty())
                    .then(|| serde_json::to_string(&job.exclude_agents))
                    .transpose()?;
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO jobs (job_id, queue, state, priority, created_at, attachments,
                                       exclude_agents, client_id, job_data)
                     VALUES (?1, ?2, 'waiting', ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (job_id) DO NOTHING",
                    )?
                    .execute(params![
                        job.job_id,
                        job.queue,
                        job.priority,
                        time::now(),
                        job.awaits_attachments.then_some("waiting"),
                        exclude,
                        job.submitter,
                        serde_json::to_string(&job.data)?,
                    ])?;
                if inserted == 0 {
                    return Err(StoreError::DuplicateJob(job.job_id));
                }
                if let Some(view) = claimable {
                    view.mark(&job.queue);
                }
                Ok(())
            })
            .await
    }

    /// Queues known to hold no claimable job are answered here, without the writer;
    /// otherwise the writer claims, exactly once.
    async fn claim_job(&self, queues: &[String], agent: &str) -> Result<Option<ClaimedJob>> {
        let Some(seen) = self.claimable.look(queues) else {
            return Ok(None);
        };
        let (polled, agent) = (queues.to_vec(), agent.to_string());
        // One statement changes the database (the claim; reads follow a miss).
        let claimed = self
            .writer
            .write_one_statement(move |tx| match claim(tx, &polled, &agent)? {
                Some(claimed) => Ok(Ok(claimed)),
                // Jobs this agent may not take (`exclude_agents`) are still others' to claim.
                None => Ok(Err(queues_with_claimable_jobs(tx, &polled)?)),
            })
            .await?;
        match claimed {
            // The definition is parsed here, not on the writer, whose time every claim
            // and submit shares.
            Ok((job, data)) => Ok(Some(ClaimedJob {
                data: json_object(Some(data))?,
                ..job
            })),
            Err(still_claimable) => {
                self.claimable.found_none(queues, seen, &still_claimable);
                Ok(None)
            }
        }
    }

    async fn job_definition(&self, job_id: &str) -> Result<Option<Map<String, Value>>> {
        let job_id = job_id.to_string();
        let data: Option<String> = self
            .readers
            .lookup(move |db| {
                Ok(db
                    .prepare_cached("SELECT job_data FROM jobs WHERE job_id = ?1")?
                    .query_row([&job_id], |row| row.get(0))
                    .optional()?)
            })
            .await?;
        data.map(|text| json_object(Some(text))).transpose()
    }

    async fn job_counts(&self) -> Result<Vec<(String, String, u64)>> {
        self.readers
            .read(|db| {
                let mut query = db.prepare_cached(
                    "SELECT queue, state, COUNT(*) FROM jobs GROUP BY queue, state",
                )?;
                let rows =
                    query.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    async fn search_jobs(&self, filter: JobFilter) -> Result<Vec<JobSummary>> {
        self.readers.read(move |db| search(db, &filter)).await
    }

    async fn queue_jobs(&self, queue: &str) -> Result<Vec<JobSummary>> {
        let queue = queue.to_string();
        self.readers
            .read(move |db| {
                let mut query = db.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM jobs WHERE queue = ?1 ORDER BY seq"
                ))?;
                let rows = query.query_map([&queue], summary)?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn agent_jobs(&self, agent: &str, limit: u32) -> Result<Vec<JobSummary>> {
        let agent = agent.to_string();
        self.readers
            .read(move |db| {
                let mut query = db.prepare_cached(&format!(
                    "SELECT {SUMMARY_COLUMNS} FROM jobs
                     WHERE agent = ?1 ORDER BY seq DESC LIMIT ?2"
                ))?;
                let jobs = query.query_map(params![agent, limit], summary)?;
                Ok(jobs.collect::<rusqlite::Result<_>>()?)
            })
            .await
    }

    async fn cancel_job(&self, job_id: &str) -> Result<bool> {
        let id = job_id.to_string();
        self.writer
            .write_one_statement(move |tx| {
                let changed = tx.execute(
                    "UPDATE jobs SET state = 'cancelled'
                     WHERE job_id = ?1 AND state NOT IN (?2, ?3, ?4)",
                    params![
                        id,
                        JobState::FINISHED_NAMES[0],
                        JobState::FINISHED_NAMES[1],
                        JobState::FINISHED_NAMES[2]
                    ],
                )?;
                Ok(changed > 0)
            })
            .await
    }

    async fn queue_position(&self, job_id: &str) -> Result<Option<u64>> {
        let job_id = job_id.to_string();
        self.readers
            .read(move |db| {
                let position = db
                    .prepare_cached(
                        "SELECT (SELECT count(*) FROM jobs AS ahead
                                 WHERE ahead.queue = me.queue AND ahead.state = 'waiting'
                                   AND (ahead.priority > me.priority
                                        OR (ahead.priority = me.priority AND ahead.seq < me.seq)))
                         FROM jobs AS me WHERE me.job_id = ?1 AND me.state = 'waiting'",
                    )?
                    .query_row([&job_id], |row| row.get(0))
                    .optional()?;
                Ok(position)
            })
            .await
    }

    async fn attachment_gate(&self, job_id: &str) -> Result<AttachmentGate> {
        let job_id = job_id.to_string();
        self.readers
            .lookup(move |db| Ok(attachment_gate(db, &job_id)?))
            .await
    }

    async fn record_attachments(&self, job_id: &str, blob: StoredBlob) -> Result<AttachmentRecord> {
        let id = job_id.to_string();
        let view = self.claimable.clone();
        self.writer
            .write(move |tx| {
                let gate = attachment_gate(tx, &id)?;
                if !matches!(gate, AttachmentGate::Open { .. }) {
                    let stored = stored_blob_name(tx, &id, BlobKind::Attachments)?;
                    return Ok(AttachmentRecord::Refused { gate, stored });
                }
                let replaced = record_blob(tx, &id, BlobKind::Attachments, &blob)?;
                let queue: String = tx.query_row(
                    "UPDATE jobs SET attachments = 'complete'
                     WHERE job_id = ?1 RETURNING queue",
                    [&id],
                    |row| row.get(0),
                )?;
                view.mark(&queue);
                Ok(AttachmentRecord::Recorded { queue, replaced })
            })
            .await
    }

    async fn job_exists(&self, job_id: &str) -> Result<bool> {
        let job_id = job_id.to_string();
        self.readers
            .lookup(move |db| Ok(job_exists(db, &job_id)?))
            .await
    }

    async fn record_artifact(
        &self,
        job_id: &str,
        blob: StoredBlob,
    ) -> Result<(bool, Option<String>)> {
        let id = job_id.to_string();
        self.writer
            .write(move |tx| {
                if !job_exists(tx, &id)? {
                    return Ok((false, Some(blob.file_name)));
                }
                Ok((true, record_blob(tx, &id, BlobKind::Artifact, &blob)?))
            })
            .await
    }

    async fn update_result(&self, job_id: &str, update: ResultUpdate) -> Result<Option<String>> {
        let id = job_id.to_string();
        let completes = update
            .job_state
            .as_deref()
            .is_some_and(JobState::is_complete_name);
        if completes {
            self.writer
                .write(move |tx| complete_job(tx, &id, update))
                .await?;
            return Ok(None);
        }
        let view = self.claimable.clone();
        self.writer
            .write_one_statement(move |tx| {
                let requeued = report_progress(tx, &id, update)?;
                if let Some(queue) = &requeued {
                    view.mark(queue);
                }
                Ok(requeued)
            })
            .await
    }

    async fn result(&self, job_id: &str) -> Result<Option<ResultView>> {
        let job_id = job_id.to_string();
        self.readers
            .lookup(move |db| {
                let row = db
                    .prepare_cached(
                        "SELECT state, status, device_info, outcome FROM jobs WHERE job_id = ?1",
                    )?
                    .query_row([&job_id], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, Option<String>>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, Option<String>>(3)?,
                        ))
                    })
                    .optional()?;
                row.map(|(job_state, status, device_info, outcome)| {
                    let status = json_object(status)?;
                    Ok(ResultView {
                        outcome: read_outcome(&job_state, outcome.as_deref(), || Some(&status)),
                        job_state,
                        status,
                        device_info: device_info
                            .map(|text| serde_json::from_str(&text))
                            .transpose()?,
                    })
                })
                .transpose()
            })
            .await
    }

    async fn job_record(&self, job_id: &str) -> Result<Option<JobRecord>> {
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

    async fn blob_name(&self, job_id: &str, kind: BlobKind) -> Result<Option<String>> {
        let job_id = job_id.to_string();
        self.readers
            .lookup(move |db| Ok(stored_blob_name(db, &job_id, kind)?))
            .await
    }
}

/// The atomic claim: the best claimable job of the given queues becomes `running` in the
/// same statement that finds it, so no two agents can get the same job.
/// The claimed job, with its definition as stored (JSON text) beside it.
fn claim(tx: &Connection, queues: &[String], agent: &str) -> Result<Option<(ClaimedJob, String)>> {
    let now = time::now();
    let sql = claim_sql(queues.len());
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&now, &agent];
    values.extend(queues.iter().map(|q| q as &dyn rusqlite::ToSql));
    let claimed = tx
        .prepare_cached(&sql)?
        .query_row(params_from_iter(values), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })
        .optional()?;
    // The wait is recorded by the trigger jobs_record_wait (schema.rs), in this statement.
    let Some((job_id, data, attachments, submitter)) = claimed else {
        return Ok(None);
    };
    let job = ClaimedJob {
        job_id,
        started_at: now,
        data: Map::new(),
        attachments,
        submitter,
    };
    Ok(Some((job, data)))
}

/// Those of `queues` holding a job some agent could claim now.
fn queues_with_claimable_jobs(tx: &Connection, queues: &[String]) -> Result<Vec<String>> {
    let mut query = tx.prepare_cached(
        "SELECT 1 FROM jobs WHERE queue = ?1 AND state = 'waiting'
           AND (attachments IS NULL OR attachments = 'complete') LIMIT 1",
    )?;
    let mut found = Vec::new();
    for queue in queues {
        if query.exists([queue])? {
            found.push(queue.clone());
        }
    }
    Ok(found)
}

/// A report of a job in progress, in one statement; returns the job's queue if the
/// report put it back to `waiting`.
fn report_progress(tx: &Connection, job_id: &str, update: ResultUpdate) -> Result<Option<String>> {
    let (status, device_info) = update.texts()?;
    let queue: Option<(String, String)> = tx
        .prepare_cached(
            // A cancelled job only leaves `cancelled` for the agent's final `complete`
            // (complete_job): a phase report racing the cancel must not undo it. A job
            // given back to its queue is no longer its agent's.
            "UPDATE jobs SET state = CASE WHEN state = 'cancelled' THEN state
                                          ELSE coalesce(?2, state) END,
                             agent = CASE WHEN state <> 'cancelled' AND ?2 = 'waiting'
                                          THEN NULL ELSE agent END,
                             status = coalesce(?3, status),
                             device_info = coalesce(?4, device_info)
             WHERE job_id = ?1 RETURNING queue, state",
        )?
        .query_row(
            params![job_id, update.job_state, status, device_info],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(queue
        .filter(|(_, state)| state == "waiting")
        .map(|(queue, _)| queue))
}

/// The agent's final report: the job becomes `complete` (also from `cancelled`, as with
/// the reference) and its outcome is worked out, once. A job cancelled while it ran
/// keeps `cancelled` as its outcome; a resent final report changes nothing.
fn complete_job(tx: &Connection, job_id: &str, update: ResultUpdate) -> Result<()> {
    let row: Option<(String, Option<String>, Option<String>)> = tx
        .prepare_cached("SELECT state, status, outcome FROM jobs WHERE job_id = ?1")?
        .query_row([job_id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let Some((previous_state, stored_status, stored_outcome)) = row else {
        return Ok(());
    };
    let outcome = match stored_outcome {
        Some(outcome) if JobState::is_complete_name(&previous_state) => Some(outcome),
        _ => {
            let stored_statuses;
            let statuses = match &update.status {
                Some(statuses) => statuses,
                None => {
                    stored_statuses = json_object(stored_status)?;
                    &stored_statuses
                }
            };
            let ended_as = if previous_state == "cancelled" {
                "cancelled"
            } else {
                "complete"
            };
            let mut unreadable = Ok(());
            let outcome = Outcome::of(ended_as, statuses, |phase| {
                kill_reason_in_output(tx, job_id, phase)
                    .map_err(|error| unreadable = Err(error))
                    .ok()
                    .flatten()
            });
            unreadable?;
            outcome.map(|outcome| outcome.encode())
        }
    };
    let (status, device_info) = update.texts()?;
    tx.prepare_cached(
        "UPDATE jobs SET state = ?2, status = coalesce(?3, status),
                         device_info = coalesce(?4, device_info), outcome = ?5
         WHERE job_id = ?1",
    )?
    .execute(params![
        job_id,
        update.job_state,
        status,
        device_info,
        outcome
    ])?;
    Ok(())
}

/// The claim statement for `queue_count` queues (`?1` now, `?2` the agent, then the
/// queues). Each queue's best job is found on its own, through the index, and the best of
/// those wins: one sort over all waiting jobs of several queues would cost a scan.
fn claim_sql(queue_count: usize) -> String {
    let best_of_queue = |n: usize| -> String {
        format!(
            "(SELECT seq, priority, created_at FROM jobs
                 WHERE queue = ?{n} AND state = 'waiting'
                   AND (attachments IS NULL OR attachments = 'complete')
                   AND (exclude_agents IS NULL
                        OR NOT EXISTS (SELECT 1 FROM json_each(exclude_agents) WHERE value = ?2))
                 ORDER BY priority DESC, created_at, seq LIMIT 1)"
        )
    };
    let best = match queue_count {
        1 => format!("SELECT seq FROM {}", best_of_queue(3)),
        _ => {
            let candidates: Vec<String> = (3..3 + queue_count)
                .map(|n| format!("SELECT * FROM {}", best_of_queue(n)))
                .collect();
            format!(
                "SELECT seq FROM ({}) ORDER BY priority DESC, created_at, seq LIMIT 1",
                candidates.join(" UNION ALL ")
            )
        }
    };
    format!(
        "UPDATE jobs SET state = 'running', started_at = ?1, agent = nullif(?2, '')
         WHERE seq = ({best})
         RETURNING job_id, job_data, attachments, client_id"
    )
}

fn attachment_gate(db: &Connection, job_id: &str) -> rusqlite::Result<AttachmentGate> {
    let job: Option<(Option<String>, Option<String>)> = db
        .prepare_cached(
            "SELECT attachments, client_id FROM jobs WHERE job_id = ?1 AND state = 'waiting'",
        )?
        .query_row([job_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(AttachmentGate::of(job))
}

/// The file holding a job's archive of `kind`, if one was stored.
fn stored_blob_name(
    db: &Connection,
    job_id: &str,
    kind: BlobKind,
) -> rusqlite::Result<Option<String>> {
    db.prepare_cached("SELECT file_name FROM blobs WHERE job_id = ?1 AND kind = ?2")?
        .query_row(params![job_id, kind.as_str()], |row| row.get(0))
        .optional()
}

fn job_exists(db: &Connection, job_id: &str) -> rusqlite::Result<bool> {
    db.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE job_id = ?1)")?
        .query_row([job_id], |row| row.get(0))
}

/// Points a job's blob of `kind` at a new file; returns the file it replaced.
fn record_blob(
    tx: &Connection,
    job_id: &str,
    kind: BlobKind,
    blob: &StoredBlob,
) -> Result<Option<String>> {
    let replaced = stored_blob_name(tx, job_id, kind)?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO blobs (job_id, kind, file_name, size, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        job_id,
        kind.as_str(),
        blob.file_name,
        blob.size as i64,
        time::now()
    ])?;
    Ok(replaced)
}

fn search(db: &Connection, filter: &JobFilter) -> Result<Vec<JobSummary>> {
    let mut conditions = Vec::new();
    let mut values: Vec<String> = Vec::new();
    if !filter.tags.is_empty() {
        let placeholders = vec!["?"; filter.tags.len()].join(", ");
        let matching = format!(
            "(SELECT count(DISTINCT value) FROM json_each(jobs.job_data, '$.tags') WHERE value IN ({placeholders}))"
        );
        conditions.push(if filter.match_all_tags {
            format!("{matching} = {}", filter.distinct_tags())
        } else {
            format!("{matching} > 0")
        });
        values.extend(filter.tags.iter().cloned());
    }
    if filter.active {
        conditions.push("state NOT IN ('cancelled', 'complete', 'completed')".into());
    } else if !filter.states.is_empty() {
        conditions.push(format!(
            "state IN ({})",
            vec!["?"; filter.states.len()].join(", ")
        ));
        values.extend(filter.states.iter().cloned());
    }
    if let Some(queue) = &filter.queue {
        conditions.push("queue = ?".into());
        values.push(queue.clone());
    }
    if let Some(prefix) = &filter.id_prefix {
        // The caller keeps prefixes to hex digits and dashes, so no LIKE wildcard slips in.
        conditions.push("job_id LIKE ?".into());
        values.push(format!("{prefix}%"));
    }
    let order = if filter.newest_first { "DESC" } else { "ASC" };
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let limit = filter
        .limit
        .map_or(-1, |limit| limit.min(i64::MAX as u64) as i64);
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM jobs {where_clause} ORDER BY seq {order} LIMIT {limit} OFFSET {}",
        filter.offset.min(i64::MAX as u64)
    );
    let mut query = db.prepare(&sql)?;
    let rows = query.query_map(params_from_iter(values), summary)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
