//! Dispatch on PostgreSQL: the statements that submit jobs and hand them to agents, which
//! the group-commit task (`group`) runs for many callers at once. A claim locks the best
//! waiting job of the agent's queues, skipping rows other claims hold (`SKIP LOCKED`),
//! makes it `running` and records its wait, so no two agents get the same job and no
//! claim waits on another.

use deadpool_postgres::GenericClient;

use crate::job::time;
use crate::store::error::{Result, StoreError};
use crate::store::jobs::{ClaimedJob, NewJob};

/// The claim: the best claimable job of `$1` (queues) becomes `$2`'s (the agent) at `$3`,
/// highest priority then oldest. Each queue's best is found through the waiting-jobs
/// index on its own, as on SQLite.
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

/// New jobs column by column, as `insert` sends them (one array per column).
#[derive(Default)]
struct JobColumns<'a> {
    ids: Vec<&'a str>,
    queues: Vec<&'a str>,
    priorities: Vec<i64>,
    attachments: Vec<Option<&'a str>>,
    excluded: Vec<Option<String>>,
    submitters: Vec<Option<&'a str>>,
    definitions: Vec<String>,
}

/// Stores new waiting jobs in one statement, in order; each is `Ok`, or `DuplicateJob`
/// when its id was taken (also by an earlier job of `jobs`).
pub(super) async fn insert(db: &impl GenericClient, jobs: &[&NewJob]) -> Result<Vec<Result<()>>> {
    let mut columns = JobColumns::default();
    for job in jobs {
        columns.ids.push(&job.job_id);
        columns.queues.push(&job.queue);
        columns.priorities.push(job.priority);
        columns
            .attachments
            .push(job.awaits_attachments.then_some("waiting"));
        let excluded = (!job.exclude_agents.is_empty())
            .then(|| serde_json::to_string(&job.exclude_agents))
            .transpose()?;
        columns.excluded.push(excluded);
        columns.submitters.push(job.submitter.as_deref());
        columns.definitions.push(serde_json::to_string(&job.data)?);
    }
    let insert = db
        .prepare_cached(
            "INSERT INTO jobs (job_id, queue, state, priority, created_at, attachments,
                               exclude_agents, client_id, job_data)
             SELECT id, queue, 'waiting', priority, $8, attachments, exclude::jsonb, client,
                    data::json
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                         $6::text[], $7::text[])
                  AS job (id, queue, priority, attachments, exclude, client, data)
             ON CONFLICT (job_id) DO NOTHING
             RETURNING job_id",
        )
        .await?;
    let rows = db
        .query(
            &insert,
            &[
                &columns.ids,
                &columns.queues,
                &columns.priorities,
                &columns.attachments,
                &columns.excluded,
                &columns.submitters,
                &columns.definitions,
                &time::now(),
            ],
        )
        .await?;
    let mut inserted: std::collections::HashSet<&str> = rows.iter().map(|row| row.get(0)).collect();
    // A job id inserted now goes to the first job that asked for it.
    Ok(jobs
        .iter()
        .map(|job| match inserted.remove(job.job_id.as_str()) {
            true => Ok(()),
            false => Err(StoreError::DuplicateJob(job.job_id.clone())),
        })
        .collect())
}

/// What a claim of several agents at once (`claim_many`) came to for one of them.
pub(super) enum Assignment {
    Job(ClaimedJob),
    /// No job of the queues could be theirs.
    Nothing,
    /// The job lined up for them excluded them, and there may be others: claim alone.
    Unsure,
}

/// The claim of several agents polling the same queues (`$1`), in one statement: the best
/// `$3` (their number) claimable jobs are locked, skipping those other claims hold, the
/// n-th best is lined up for the n-th agent of `$2` and becomes theirs at `$4` unless it
/// excludes them, and their waits are recorded. One row per agent, in order: the job it
/// got (or nulls), and how many jobs were seen.
const CLAIM_MANY: &str = "
    WITH candidate AS (
        SELECT job.seq, job.exclude_agents,
               row_number() OVER (ORDER BY job.priority DESC, job.created_at, job.seq) AS rank
        FROM unnest($1::text[]) AS polled (queue)
        CROSS JOIN LATERAL (
            SELECT seq, priority, created_at, exclude_agents FROM jobs
            WHERE queue = polled.queue AND state = 'waiting'
              AND (attachments IS NULL OR attachments = 'complete')
            ORDER BY priority DESC, created_at, seq
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        ) AS job
        ORDER BY rank
        LIMIT $3
    ), taker AS (
        SELECT agent, rank FROM unnest($2::text[]) WITH ORDINALITY AS taker (agent, rank)
    ), claimed AS (
        UPDATE jobs SET state = 'running', started_at = $4, agent = nullif(taker.agent, '')
        FROM candidate JOIN taker USING (rank)
        WHERE jobs.seq = candidate.seq AND jobs.state = 'waiting'
          AND (candidate.exclude_agents IS NULL OR NOT candidate.exclude_agents ? taker.agent)
        RETURNING taker.rank, jobs.job_id, jobs.job_data::text AS job_data, jobs.attachments,
                  jobs.client_id, jobs.queue, jobs.created_at
    ), waited AS (
        INSERT INTO wait_times (queue, seconds, recorded_at)
        SELECT queue, ($4 - created_at) / 1000000, $4 FROM claimed
    )
    SELECT claimed.job_id, claimed.job_data, claimed.attachments, claimed.client_id,
           (SELECT count(*) FROM candidate) AS seen
    FROM taker LEFT JOIN claimed USING (rank)
    ORDER BY taker.rank";

/// The claim of several `agents` polling the same `queues` (`CLAIM_MANY`): one statement,
/// its own transaction, whatever their number.
pub(super) async fn claim_many(
    db: &impl GenericClient,
    queues: &[String],
    agents: &[&str],
) -> Result<Vec<Assignment>> {
    let now = time::now();
    let statement = db.prepare_cached(CLAIM_MANY).await?;
    let rows = db
        .query(
            &statement,
            &[&queues, &agents, &(agents.len() as i64), &now],
        )
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let job = match row.get::<_, Option<String>>(0) {
            None => None,
            Some(job_id) => Some(ClaimedJob {
                job_id,
                started_at: now,
                data: serde_json::from_str(row.get(1))?,
                attachments: row.get(2),
                submitter: row.get(3),
            }),
        };
        claimed.push((job, row.get::<_, i64>(4) as usize));
    }
    // A job lined up for an agent it excluded is still waiting, and an agent further down
    // could have taken it: then every agent without a job claims alone.
    let excluded_one = claimed
        .iter()
        .enumerate()
        .any(|(rank, (job, seen))| job.is_none() && rank < *seen);
    Ok(claimed
        .into_iter()
        .map(|(job, _)| match job {
            Some(job) => Assignment::Job(job),
            None if excluded_one => Assignment::Unsure,
            // Fewer jobs than agents were seen: every claimable job went to those before.
            None => Assignment::Nothing,
        })
        .collect())
}

/// The claim (`CLAIM`): the best claimable job of `queues` becomes `agent`'s.
pub(super) async fn claim(
    db: &impl GenericClient,
    queues: &[String],
    agent: &str,
) -> Result<Option<ClaimedJob>> {
    let now = time::now();
    let claim = db.prepare_cached(CLAIM).await?;
    let Some(row) = db.query_opt(&claim, &[&queues, &agent, &now]).await? else {
        return Ok(None);
    };
    Ok(Some(ClaimedJob {
        job_id: row.get(0),
        started_at: now,
        data: serde_json::from_str(row.get(1))?,
        attachments: row.get(2),
        submitter: row.get(3),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::Jobs;
    use crate::store::postgres::testing;

    fn outcomes(assignments: Vec<Assignment>) -> Vec<String> {
        assignments
            .into_iter()
            .map(|assignment| match assignment {
                Assignment::Job(job) => job.job_id,
                Assignment::Nothing => "nothing".into(),
                Assignment::Unsure => "unsure".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn agents_polling_together_take_the_best_jobs_in_turn_and_the_excluded_claim_alone() {
        let (cluster, db) = testing::backend().await;
        let mut not_for_a1 = NewJob::plain("not-for-a1", "q", 9);
        not_for_a1.exclude_agents = vec!["a1".into()];
        for job in [
            not_for_a1,
            NewJob::plain("second", "q", 5),
            NewJob::plain("third", "q", 0),
        ] {
            db.insert_job(job).await.expect("insert");
        }
        let client = db.connection().await.expect("connection");
        let queues = ["q".to_string()];

        let first = claim_many(&client, &queues, &["a1", "a2"])
            .await
            .expect("claim");
        assert_eq!(outcomes(first), ["unsure", "second"]);
        let alone = claim(&client, &queues, "a1")
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(
            alone.job_id, "third",
            "a1 alone skips the job that excludes it"
        );

        // One job left, for three agents (one of them polling twice): the best goes to
        // the first, and the others are told there is nothing.
        let last = claim_many(&client, &queues, &["a2", "a3", "a3"])
            .await
            .expect("claim");
        assert_eq!(outcomes(last), ["not-for-a1", "nothing", "nothing"]);
        assert_eq!(cluster.sql("tf", "SELECT count(*) FROM wait_times"), "3");
        assert_eq!(
            cluster.sql(
                "tf",
                "SELECT string_agg(job_id || '=' || agent, ' ' ORDER BY job_id) FROM jobs"
            ),
            "not-for-a1=a2 second=a2 third=a1"
        );
    }
}
