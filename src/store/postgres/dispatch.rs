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
    /// The jobs seen were all excluded for this agent, and there may be more: claim alone.
    Unsure,
}

/// The best claimable jobs of `queues` for several agents polling them, in two statements
/// whatever their number: the best `agents.len()` jobs are locked (skipping those other
/// claims hold), each agent in turn takes the best one that does not exclude it, and
/// those become theirs, their waits recorded.
pub(super) async fn claim_many(
    db: &impl GenericClient,
    queues: &[String],
    agents: &[&str],
) -> Result<Vec<Assignment>> {
    let wanted = agents.len() as i64;
    let candidates = db
        .prepare_cached(
            "SELECT job.seq, job.exclude_agents::text
             FROM unnest($1::text[]) AS polled (queue)
             CROSS JOIN LATERAL (
                 SELECT seq, priority, created_at, exclude_agents FROM jobs
                 WHERE queue = polled.queue AND state = 'waiting'
                   AND (attachments IS NULL OR attachments = 'complete')
                 ORDER BY priority DESC, created_at, seq
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ) AS job
             ORDER BY job.priority DESC, job.created_at, job.seq
             LIMIT $2",
        )
        .await?;
    let rows = db.query(&candidates, &[&queues, &wanted]).await?;
    let mut free: Vec<(i64, Vec<String>)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let excluded: Option<&str> = row.get(1);
        let excluded = excluded.map(serde_json::from_str).transpose()?;
        free.push((row.get(0), excluded.unwrap_or_default()));
    }
    // Fewer jobs than agents: every claimable job of the queues was seen.
    let all_seen = free.len() < agents.len();
    let mut taken: Vec<Option<i64>> = Vec::with_capacity(agents.len());
    for agent in agents {
        let best = free
            .iter()
            .position(|(_, excluded)| !excluded.iter().any(|name| name == agent));
        taken.push(best.map(|index| free.remove(index).0));
    }
    let (seqs, owners): (Vec<i64>, Vec<&str>) = taken
        .iter()
        .zip(agents)
        .filter_map(|(seq, agent)| Some(((*seq)?, *agent)))
        .unzip();
    let now = time::now();
    let claim = db
        .prepare_cached(
            "WITH claimed AS (
                 UPDATE jobs SET state = 'running', started_at = $3, agent = nullif(taker.agent, '')
                 FROM unnest($1::bigint[], $2::text[]) AS taker (seq, agent)
                 WHERE jobs.seq = taker.seq AND jobs.state = 'waiting'
                 RETURNING jobs.seq, jobs.job_id, jobs.job_data::text AS job_data,
                           jobs.attachments, jobs.client_id, jobs.queue, jobs.created_at
             ), waited AS (
                 INSERT INTO wait_times (queue, seconds, recorded_at)
                 SELECT queue, ($3 - created_at) / 1000000, $3 FROM claimed
             )
             SELECT seq, job_id, job_data, attachments, client_id FROM claimed",
        )
        .await?;
    let mut claimed = std::collections::HashMap::new();
    for row in db.query(&claim, &[&seqs, &owners, &now]).await? {
        let job = ClaimedJob {
            job_id: row.get(1),
            started_at: now,
            data: serde_json::from_str(row.get(2))?,
            attachments: row.get(3),
            submitter: row.get(4),
        };
        claimed.insert(row.get::<_, i64>(0), job);
    }
    Ok(taken
        .into_iter()
        .map(|seq| match seq.and_then(|seq| claimed.remove(&seq)) {
            Some(job) => Assignment::Job(job),
            None if all_seen && seq.is_none() => Assignment::Nothing,
            None => Assignment::Unsure,
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
