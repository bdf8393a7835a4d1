//! Submitting and claiming jobs on PostgreSQL: the statements the backend's writer will
//! run, with SQLite's rules (`store/jobs.rs`). A claim is one statement: the best waiting
//! job of the agent's queues is locked, skipping rows other claims hold (`SKIP LOCKED`),
//! made `running` and its wait recorded, so no two agents get the same job and no claim
//! waits on another.

use tokio_postgres::GenericClient;

use crate::job::time::Micros;
use crate::store::{NewJob, StoreError};

/// Stores a new waiting job; `DuplicateJob` when its id is taken.
pub async fn submit(
    client: &impl GenericClient,
    job: &NewJob,
    now: Micros,
) -> Result<(), StoreError> {
    let exclude = (!job.exclude_agents.is_empty())
        .then(|| serde_json::to_string(&job.exclude_agents))
        .transpose()?;
    let data = serde_json::to_string(&job.data)?;
    let inserted = client
        .execute(
            "INSERT INTO jobs (job_id, queue, state, priority, created_at, attachments,
                               exclude_agents, client_id, job_data)
             VALUES ($1, $2, 'waiting', $3, $4, $5, $6::text::jsonb, $7, $8::text::json)
             ON CONFLICT (job_id) DO NOTHING",
            &[
                &job.job_id,
                &job.queue,
                &job.priority,
                &now,
                &job.awaits_attachments.then_some("waiting"),
                &exclude,
                &job.submitter,
                &data,
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::DuplicateJob(job.job_id.clone()));
    }
    Ok(())
}

/// A job handed to an agent: its id, its definition as stored (JSON text), its archive
/// state and its submitter.
pub struct Claimed {
    pub job_id: String,
    pub data: String,
    pub attachments: Option<String>,
    pub submitter: Option<String>,
}

/// The claim: the best claimable job of `queues` (highest priority, then oldest) becomes
/// `agent`'s, or `None`. Each queue's best is found through the waiting-jobs index on its
/// own, as on SQLite.
const CLAIM: &str = "
    WITH best AS (
        SELECT job.seq
        FROM unnest($1::text[]) AS polled (queue)
        CROSS JOIN LATERAL (
            SELECT seq, priority, created_at FROM jobs
            WHERE queue = polled.queue AND state = 'waiting'
              AND (attachments IS NULL OR attachments = 'complete')
              AND (exclude_agents IS NULL OR NOT exclude_agents ? $2)
            ORDER BY priority DESC, created_at, seq
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        ) AS job
        ORDER BY job.priority DESC, job.created_at, job.seq
        LIMIT 1
    ), claimed AS (
        UPDATE jobs SET state = 'running', started_at = $3, agent = nullif($2, '')
        FROM best WHERE jobs.seq = best.seq AND jobs.state = 'waiting'
        RETURNING jobs.job_id, jobs.job_data::text AS job_data, jobs.attachments,
                  jobs.client_id, jobs.queue, jobs.created_at
    ), waited AS (
        INSERT INTO wait_times (queue, seconds, recorded_at)
        SELECT queue, ($3 - created_at) / 1000000, $3 FROM claimed
    )
    SELECT job_id, job_data, attachments, client_id FROM claimed";

pub async fn claim(
    client: &impl GenericClient,
    queues: &[String],
    agent: &str,
    now: Micros,
) -> Result<Option<Claimed>, StoreError> {
    let row = client.query_opt(CLAIM, &[&queues, &agent, &now]).await?;
    Ok(row.map(|row| Claimed {
        job_id: row.get(0),
        data: row.get(1),
        attachments: row.get(2),
        submitter: row.get(3),
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::{json, Map};
    use tf_test_support::postgres::Postgres;

    use super::*;
    use crate::store::postgres::Database;

    fn job(id: &str, queue: &str, priority: i64) -> NewJob {
        NewJob {
            job_id: id.to_string(),
            queue: queue.to_string(),
            priority,
            awaits_attachments: false,
            exclude_agents: Vec::new(),
            submitter: None,
            data: Map::from_iter([("job_queue".to_string(), json!(queue))]),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn concurrent_claims_take_every_job_exactly_once_and_record_each_wait() {
        const JOBS: i64 = 1000;
        let cluster = Postgres::start();
        let url = cluster.create_database("claims");
        runtime().block_on(async {
            let database = Database::parse(&url).expect("url");
            let client = database.connect().await.expect("connect");
            for n in 0..300 {
                submit(&client, &job(&format!("job-{n}"), "q", 0), n)
                    .await
                    .expect("submit");
            }
            // Every claimer connected before any claims, so that they race.
            let mut clients = Vec::new();
            for _ in 0..8 {
                clients.push(database.connect().await.expect("connect"));
            }
            let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
            let claimers: Vec<_> = clients
                .into_iter()
                .enumerate()
                .map(|(agent, client)| {
                    let start = start.clone();
                    tokio::spawn(async move {
                        start.wait().await;
                        let mut mine = Vec::new();
                        let queues = ["q".to_string()];
                        let agent = format!("a{agent}");
                        while let Some(job) = claim(&client, &queues, &agent, 1_000_000_000)
                            .await
                            .expect("claim")
                        {
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
        });
        assert_eq!(
            cluster.sql("claims", "SELECT count(*) FROM wait_times"),
            "300"
        );
        assert_eq!(
            cluster.sql(
                "claims",
                "SELECT count(*) FROM jobs WHERE state = 'running'"
            ),
            "300"
        );
    }

    #[test]
    fn claims_follow_priority_exclusions_and_pending_archives() {
        let cluster = Postgres::start();
        let url = cluster.create_database("rules");
        runtime().block_on(async {
            let client = Database::parse(&url)
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let mut low = job("low", "q", 0);
            low.data
                .insert("note".into(), json!("keys keep their order"));
            submit(&client, &low, 1).await.expect("submit");
            submit(&client, &job("high", "other", 5), 2)
                .await
                .expect("submit");
            let mut excluded = job("not-for-a1", "q", 9);
            excluded.exclude_agents = vec!["a1".into()];
            submit(&client, &excluded, 3).await.expect("submit");
            let mut pending = job("archive-pending", "q", 9);
            pending.awaits_attachments = true;
            submit(&client, &pending, 4).await.expect("submit");
            let duplicate = submit(&client, &job("low", "q", 0), 5).await;
            assert!(matches!(duplicate, Err(StoreError::DuplicateJob(_))));

            let queues = ["q".to_string(), "other".to_string()];
            let order: Vec<String> = [
                claim(&client, &queues, "a1", 10).await,
                claim(&client, &queues, "a1", 10).await,
                claim(&client, &queues, "a1", 10).await,
            ]
            .into_iter()
            .map(|claimed| {
                claimed
                    .expect("claim")
                    .map(|job| job.job_id)
                    .unwrap_or_default()
            })
            .collect();
            assert_eq!(
                order,
                ["high", "low", ""],
                "a1 never gets its exclusion or a pending job"
            );
            let other = claim(&client, &queues, "a2", 10)
                .await
                .expect("claim")
                .expect("a job");
            assert_eq!(other.job_id, "not-for-a1");
        });
        assert_eq!(
            cluster.sql(
                "rules",
                "SELECT job_data::text FROM jobs WHERE job_id = 'low'"
            ),
            r#"{"job_queue":"q","note":"keys keep their order"}"#
        );
    }
}
