//! The queues that may hold a claimable job (`store/claimable.rs`) on PostgreSQL. This
//! server marks a queue for each job it makes claimable, and the other servers on the
//! same database tell it of theirs (`relay`). A notification can be lost, so the queues
//! holding claimable jobs are also read again every `REMARK`: the longest a job
//! submitted through another server can wait before this one hands it out. The same pass
//! repairs a mark the request that released a job's attachments or gave it back to its
//! queue did not make because its caller went away as it committed (submits are marked
//! by the dispatch worker, which never goes away).

use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::pool::Connections;
use crate::store::claimable::{ClaimableQueues, QUEUES_WITH_CLAIMABLE_JOBS};
use crate::store::error::Result;

/// How often the queues with claimable jobs are read again.
pub(super) const REMARK: Duration = Duration::from_secs(5);

/// The queues with claimable jobs now, marked again every `remark` while in use.
pub(super) async fn read(
    connections: &Connections,
    remark: Duration,
) -> Result<Arc<ClaimableQueues>> {
    let view = Arc::new(ClaimableQueues::default());
    mark_claimable(&view, &connections.get().await?).await?;
    tokio::spawn(keep_marking(
        Arc::downgrade(&view),
        connections.clone(),
        remark,
    ));
    Ok(view)
}

/// Of `queues`, those that still hold a claimable job (for an agent it excludes, or held
/// by another claim), after a claim found none.
pub(super) async fn still_claimable(
    db: &impl GenericClient,
    queues: &[String],
) -> Result<Vec<String>> {
    let select = db
        .prepare_cached(
            "SELECT polled FROM unnest($1::text[]) AS polled
             WHERE EXISTS (SELECT 1 FROM jobs WHERE queue = polled AND state = 'waiting'
                             AND (attachments IS NULL OR attachments = 'complete'))",
        )
        .await?;
    let rows = db.query(&select, &[&queues]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Marks the queues that hold claimable jobs now.
pub(super) async fn mark_claimable(view: &ClaimableQueues, db: &impl GenericClient) -> Result<()> {
    let select = db.prepare_cached(QUEUES_WITH_CLAIMABLE_JOBS).await?;
    for row in db.query(&select, &[]).await? {
        view.mark(row.get(0));
    }
    Ok(())
}

/// Marks the queues with claimable jobs every `remark` while the view is in use; a
/// database away is tried again at the next turn.
async fn keep_marking(view: Weak<ClaimableQueues>, connections: Connections, remark: Duration) {
    loop {
        tokio::time::sleep(remark).await;
        let Some(view) = view.upgrade() else { return };
        let marked = match connections.get().await {
            Ok(client) => mark_claimable(&view, &client).await,
            Err(error) => Err(error),
        };
        if let Err(error) = marked {
            tracing::warn!("reading the queues with claimable jobs again: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::Jobs;
    use crate::store::jobs::NewJob;
    use crate::store::postgres::{Database, PostgresBackend};
    use tf_test_support::postgres::Postgres;

    #[tokio::test]
    async fn a_job_submitted_through_another_server_is_claimed_here_once_its_queue_is_marked() {
        let cluster = Postgres::start();
        let database = Database::parse(&cluster.create_database("tf")).expect("url");
        let here = PostgresBackend::open(&database).await.expect("open");
        let there = PostgresBackend::open(&database).await.expect("open");
        let queues = ["q".to_string()];
        // Here the queue is found empty, and unmarked.
        assert!(here
            .claim_job(&queues, "agent")
            .await
            .expect("claim")
            .is_none());
        there
            .insert_job(NewJob::plain("from-there", "q", 0))
            .await
            .expect("insert");

        let deadline = tokio::time::Instant::now() + 4 * REMARK;
        let claimed = loop {
            if let Some(job) = here.claim_job(&queues, "agent").await.expect("claim") {
                break job;
            }
            assert!(tokio::time::Instant::now() < deadline, "never seen here");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(claimed.job_id, "from-there");
        assert!(there
            .claim_job(&queues, "agent")
            .await
            .expect("claim")
            .is_none());
    }

    #[tokio::test]
    async fn a_queue_whose_only_job_excludes_the_agent_stays_marked_for_others() {
        let (_cluster, db) = crate::store::postgres::testing::backend().await;
        let mut not_for_a1 = NewJob::plain("not-for-a1", "q", 0);
        not_for_a1.exclude_agents = vec!["a1".into()];
        db.insert_job(not_for_a1).await.expect("insert");
        let queues = ["q".to_string()];
        assert!(db.claim_job(&queues, "a1").await.expect("claim").is_none());
        assert!(db.claimable.look(&queues).is_some(), "still marked");
        let claimed = db.claim_job(&queues, "a2").await.expect("claim");
        assert_eq!(claimed.expect("a job").job_id, "not-for-a1");
        assert!(db.claim_job(&queues, "a2").await.expect("claim").is_none());
        assert!(
            db.claimable.look(&queues).is_none(),
            "found empty, unmarked"
        );
    }
}
