//! Dispatch on PostgreSQL: the statements that submit jobs and hand them to agents, which
//! the dispatch workers (`group`) run for many callers at once. A claim locks the jobs
//! it was given, skipping rows other claims hold (`SKIP LOCKED`), rechecks that each
//! still waits, makes them `running` and records their waits, so no two agents get the
//! same job and no claim waits on another. The jobs come from the claimable jobs in
//! memory (`claim_listed`), or for an agent those could not serve, from the
//! waiting-jobs index (`claim`).

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;

use super::waiting::{Place, Taken};
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

/// Stores new waiting jobs in one statement, in order; each is its place in its queue, or
/// `DuplicateJob` when its id was taken (also by an earlier job of `jobs`).
pub(super) async fn insert(
    db: &impl GenericClient,
    jobs: &[&NewJob],
) -> Result<Vec<Result<Place>>> {
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
             RETURNING job_id, seq",
        )
        .await?;
    let now = time::now();
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
                &now,
            ],
        )
        .await?;
    let mut inserted: HashMap<&str, i64> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    // A job id inserted now goes to the first job that asked for it.
    Ok(jobs
        .iter()
        .map(|job| match inserted.remove(job.job_id.as_str()) {
            Some(seq) => Ok(Place::new(job.priority, now, seq)),
            None => Err(StoreError::DuplicateJob(job.job_id.clone())),
        })
        .collect())
}

/// What a claim of several agents at once (`claim_listed`) came to for one of them.
pub(super) enum Assignment {
    Job(ClaimedJob),
    /// No job of the queues could be theirs.
    Nothing,
    /// The job lined up for them excluded them: they claim alone.
    Excluded,
    /// A job listed before them was held by another claim or gone, or excluded another
    /// agent: the view may have more for them.
    Missed,
}

/// The claim of several agents polling the same queues, of jobs listed by the waiting-jobs
/// view (`$1`, their `seq`s), in one statement: those still claimable are locked, skipping
/// those other claims hold, the n-th best is lined up for the n-th agent of `$2` and
/// becomes theirs at `$3` unless it excludes them, and their waits are recorded. One row
/// per agent, in order: the job it got (or nulls), how many listed jobs were locked, and
/// the listed jobs that are no longer claimable.
const CLAIM_LISTED: &str = "
    WITH candidate AS (
        SELECT seq, exclude_agents,
               row_number() OVER (ORDER BY priority DESC, created_at, seq) AS rank
        FROM (SELECT seq, exclude_agents, priority, created_at FROM jobs
              WHERE seq = ANY($1) AND state = 'waiting'
                AND (attachments IS NULL OR attachments = 'complete')
              FOR UPDATE SKIP LOCKED) AS free
    ), taker AS (
        SELECT agent, rank FROM unnest($2::text[]) WITH ORDINALITY AS taker (agent, rank)
    ), claimed AS (
        UPDATE jobs SET state = 'running', started_at = $3, agent = nullif(taker.agent, '')
        FROM candidate JOIN taker USING (rank)
        WHERE jobs.seq = candidate.seq AND jobs.state = 'waiting'
          AND (candidate.exclude_agents IS NULL OR NOT candidate.exclude_agents ? taker.agent)
        RETURNING taker.rank, jobs.seq, jobs.job_id, jobs.job_data::text AS job_data,
                  jobs.attachments, jobs.client_id, jobs.queue, jobs.created_at
    ), waited AS (
        INSERT INTO wait_times (queue, seconds, recorded_at)
        SELECT queue, ($3 - created_at) / 1000000, $3 FROM claimed
    )
    SELECT claimed.seq, claimed.job_id, claimed.job_data, claimed.attachments,
           claimed.client_id, (SELECT count(*) FROM candidate) AS locked,
           (SELECT coalesce(array_agg(listed), '{}') FROM unnest($1::bigint[]) AS listed
            WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE seq = listed AND state = 'waiting'
                                AND (attachments IS NULL OR attachments = 'complete'))) AS gone
    FROM taker LEFT JOIN claimed USING (rank)
    ORDER BY taker.rank";

/// What `claim_listed` came to: each agent's assignment, and the listed jobs to put back
/// in the view (those neither claimed nor gone).
pub(super) struct Listed {
    pub(super) assignments: Vec<Assignment>,
    pub(super) still_waiting: Vec<Taken>,
}

/// The claim of several `agents` of the jobs `listed` (best first, taken out of the
/// waiting-jobs view): one statement, its own transaction, whatever their number.
pub(super) async fn claim_listed(
    db: &impl GenericClient,
    listed: Vec<Taken>,
    agents: &[&str],
) -> Result<Listed> {
    let now = time::now();
    let seqs: Vec<i64> = listed.iter().map(|(_, place)| place.seq).collect();
    let statement = db.prepare_cached(CLAIM_LISTED).await?;
    let rows = db.query(&statement, &[&seqs, &agents, &now]).await?;
    let (mut locked, mut gone) = (0, Vec::new());
    let mut claimed = Vec::with_capacity(rows.len());
    let mut taken = HashSet::new();
    for row in &rows {
        locked = row.get::<_, i64>(5) as usize;
        gone = row.get::<_, Vec<i64>>(6);
        let job = match row.get::<_, Option<i64>>(0) {
            None => None,
            Some(seq) => {
                taken.insert(seq);
                Some(ClaimedJob {
                    job_id: row.get(1),
                    started_at: now,
                    data: serde_json::from_str(row.get(2))?,
                    attachments: row.get(3),
                    submitter: row.get(4),
                })
            }
        };
        claimed.push(job);
    }
    // An agent without a job may have had one: when the job lined up for an agent
    // excluded it (an agent further down could have taken it), or when a listed job was
    // held by another claim or is gone. Only when every listed job was locked and went
    // to an agent before them is there nothing.
    let excluded_one = claimed.iter().take(locked).any(Option::is_none);
    let all_locked = locked == listed.len();
    let assignments = claimed
        .into_iter()
        .enumerate()
        .map(|(rank, job)| match job {
            Some(job) => Assignment::Job(job),
            None if rank < locked => Assignment::Excluded,
            None if all_locked && !excluded_one => Assignment::Nothing,
            None => Assignment::Missed,
        })
        .collect();
    let gone: HashSet<i64> = gone.into_iter().collect();
    let still_waiting = listed
        .into_iter()
        .filter(|(_, place)| !taken.contains(&place.seq) && !gone.contains(&place.seq))
        .collect();
    Ok(Listed {
        assignments,
        still_waiting,
    })
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
                Assignment::Excluded => "excluded".into(),
                Assignment::Missed => "missed".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn agents_polling_together_take_the_listed_jobs_in_turn_and_learn_why_not() {
        let (cluster, db) = testing::backend().await;
        let mut not_for_a1 = NewJob::plain("not-for-a1", "q", 9);
        not_for_a1.exclude_agents = vec!["a1".into()];
        let jobs = [
            not_for_a1,
            NewJob::plain("second", "q", 5),
            NewJob::plain("third", "q", 0),
            NewJob::plain("fourth", "q", 0),
        ];
        for job in jobs {
            db.insert_job(job).await.expect("insert");
        }
        let client = db.connection().await.expect("connection");
        let queues = ["q".to_string()];
        let (view, client, queues) = (&db.waiting, &client, &queues);
        let claim_in_turn = |agents: &'static [&'static str]| async move {
            let listed = view.take(queues, agents.len());
            let listed = claim_listed(client, listed, agents).await.expect("claim");
            view.put_back(listed.still_waiting);
            outcomes(listed.assignments)
        };

        // The best job excludes a1: a2 gets the next, and a1 is unsure.
        assert_eq!(claim_in_turn(&["a1", "a2"]).await, ["excluded", "second"]);
        let alone = claim(client, queues, "a1").await.expect("claim");
        assert_eq!(
            alone.expect("a job").job_id,
            "third",
            "a1 alone skips its exclusion"
        );

        // The view still lists `third`: found gone, it leaves the view, and the agent
        // left without a job missed it: the view may have had more.
        assert_eq!(
            claim_in_turn(&["a2", "a3", "a4"]).await,
            ["not-for-a1", "fourth", "missed"]
        );
        assert!(view.take(queues, 10).is_empty(), "nothing stale is kept");

        // Every listed job locked and taken: the agents after them have nothing.
        db.insert_job(NewJob::plain("fifth", "q", 0))
            .await
            .expect("insert");
        assert_eq!(claim_in_turn(&["a5", "a6"]).await, ["fifth", "nothing"]);

        assert_eq!(cluster.sql("tf", "SELECT count(*) FROM wait_times"), "5");
        assert_eq!(
            cluster.sql(
                "tf",
                "SELECT string_agg(job_id || '=' || agent, ' ' ORDER BY job_id) FROM jobs"
            ),
            "fifth=a5 fourth=a3 not-for-a1=a2 second=a2 third=a1"
        );
    }
}
