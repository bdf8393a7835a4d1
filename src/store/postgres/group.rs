//! Group writes on PostgreSQL, as the SQLite writer groups its commits: submits and
//! claims, the writes every agent and client makes all the time, are queued to a few
//! worker tasks. A worker takes whatever has gathered and runs it in a handful of
//! statements sent together (pipelined) on one connection: all the submits in one, the
//! claims of agents polling the same queues in one. Each statement is a transaction of
//! its own, so a group waits for one round trip and its commits' flushes instead of a
//! round trip per write, and no `BEGIN` or `COMMIT`. A caller hears "done" only once the
//! statement holding its write has committed.
//!
//! A submit statement that fails runs again job by job, so that one bad job costs the
//! others nothing but time.

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use futures_util::future::{join, join_all};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::dispatch::{claim, claim_many, insert, Assignment};
use super::pool::Connections;
use crate::store::claimable::ClaimableQueues;
use crate::store::error::{Result, StoreError};
use crate::store::jobs::{ClaimedJob, NewJob};

/// How many queued writes a worker takes at once.
const MAX_GROUP: usize = 256;

/// Groups in flight at once: while one waits for its statements' commits to reach the
/// disk, the next gathers and runs (PostgreSQL flushes their commits together).
const WORKERS: usize = 2;

type Answer<T> = oneshot::Sender<Result<T>>;

/// An agent waiting for its claim, and where its outcome goes.
type Claimer = (String, Answer<Option<ClaimedJob>>);

/// A write that may share its round trip with others, and where its outcome goes.
enum Write {
    Submit {
        job: NewJob,
        answer: Answer<()>,
    },
    Claim {
        queues: Vec<String>,
        agent: String,
        answer: Answer<Option<ClaimedJob>>,
    },
}

/// The queue to the workers.
pub(super) struct GroupWriter {
    queue: mpsc::UnboundedSender<Write>,
}

impl GroupWriter {
    /// Starts the workers, which take their connections from `connections` and mark
    /// in `claimable` the queues of the jobs they store; they end when the writer is
    /// dropped.
    pub(super) fn start(connections: Connections, claimable: Arc<ClaimableQueues>) -> GroupWriter {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WORKERS {
            let worker = Worker {
                connections: connections.clone(),
                claimable: claimable.clone(),
            };
            tokio::spawn(worker.run(receiver.clone()));
        }
        GroupWriter { queue }
    }

    pub(super) async fn submit(&self, job: NewJob) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        self.send(Write::Submit { job, answer })?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn claim(&self, queues: &[String], agent: &str) -> Result<Option<ClaimedJob>> {
        let (answer, answered) = oneshot::channel();
        self.send(Write::Claim {
            queues: queues.to_vec(),
            agent: agent.to_string(),
            answer,
        })?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    fn send(&self, write: Write) -> Result<()> {
        self.queue.send(write).map_err(|_| StoreError::Closed)
    }
}

/// One worker and what its groups need.
struct Worker {
    connections: Connections,
    claimable: Arc<ClaimableQueues>,
}

impl Worker {
    /// Takes what has gathered in the queue (waiting its turn), runs it as a group, and
    /// again.
    async fn run(self, receiver: Arc<Mutex<mpsc::UnboundedReceiver<Write>>>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while receiver.lock().await.recv_many(&mut group, MAX_GROUP).await > 0 {
            Group::of(group.drain(..)).run(&self).await;
        }
    }
}

/// A group's writes, sorted by the statement that will carry them.
#[derive(Default)]
struct Group {
    submits: Vec<(NewJob, Answer<()>)>,
    /// The claimers of each set of queues.
    claims: BTreeMap<Vec<String>, Vec<Claimer>>,
}

impl Group {
    fn of(writes: impl Iterator<Item = Write>) -> Group {
        let mut group = Group::default();
        for write in writes {
            match write {
                Write::Submit { job, answer } => group.submits.push((job, answer)),
                Write::Claim {
                    queues,
                    agent,
                    answer,
                } => group
                    .claims
                    .entry(queues)
                    .or_default()
                    .push((agent, answer)),
            }
        }
        group
    }

    /// Runs the group's statements, sent together, and answers each write.
    async fn run(self, worker: &Worker) {
        let client = match worker.connections.get().await {
            Ok(client) => client,
            Err(error) => return self.fail(error),
        };
        let db = &client;
        let jobs: Vec<&NewJob> = self.submits.iter().map(|(job, _)| job).collect();
        let claims = self.claims.iter().map(|(queues, claimers)| async move {
            let agents: Vec<&str> = claimers.iter().map(|(agent, _)| agent.as_str()).collect();
            claim_many(db, queues, &agents).await
        });
        let (submitted, assigned) = join(submit(db, &jobs), join_all(claims)).await;

        for ((job, answer), outcome) in self.submits.into_iter().zip(submitted) {
            // Marked here, not by the caller, which may have gone (a client hanging up).
            if outcome.is_ok() && !job.awaits_attachments {
                worker.claimable.mark(&job.queue);
            }
            let _ = answer.send(outcome);
        }
        // Claimers the shared statement left unsure of claim alone, sent together.
        let mut alone = Vec::new();
        for ((queues, claimers), assignments) in self.claims.into_iter().zip(assigned) {
            let assignments: Vec<Result<Assignment>> = match assignments {
                Ok(assignments) => assignments.into_iter().map(Ok).collect(),
                Err(error) => claimers.iter().map(|_| Err(error.clone())).collect(),
            };
            for ((agent, answer), assignment) in claimers.into_iter().zip(assignments) {
                let outcome = match assignment {
                    Ok(Assignment::Job(job)) => Ok(Some(job)),
                    Ok(Assignment::Nothing) => Ok(None),
                    Ok(Assignment::Unsure) => {
                        alone.push((queues.clone(), agent, answer));
                        continue;
                    }
                    Err(error) => Err(error),
                };
                let _ = answer.send(outcome);
            }
        }
        let claimed = join_all(
            alone
                .iter()
                .map(|(queues, agent, _)| claim(db, queues, agent)),
        )
        .await;
        for ((_, _, answer), outcome) in alone.into_iter().zip(claimed) {
            let _ = answer.send(outcome);
        }
    }

    /// Answers every write with `error`: the group could not be run.
    fn fail(self, error: StoreError) {
        for (_, answer) in self.submits {
            let _ = answer.send(Err(error.clone()));
        }
        for (_, answer) in self.claims.into_values().flatten() {
            let _ = answer.send(Err(error.clone()));
        }
    }
}

/// Stores `jobs` in one statement; when that fails, each in a statement of its own, so
/// that one bad job spoils nothing else. Each is `Ok` or why not (`DuplicateJob` too).
async fn submit(db: &impl GenericClient, jobs: &[&NewJob]) -> Vec<Result<()>> {
    match jobs {
        [] => Vec::new(),
        [_] => insert(db, jobs)
            .await
            .unwrap_or_else(|error| vec![Err(error)]),
        _ => match insert(db, jobs).await {
            Ok(outcomes) => outcomes,
            Err(_) => {
                let alone = jobs.iter().map(|job| async move {
                    insert(db, std::slice::from_ref(job))
                        .await
                        .and_then(|mut outcome| outcome.remove(0))
                });
                join_all(alone).await
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::testing;

    #[tokio::test]
    async fn a_job_whose_submitter_hung_up_is_stored_and_its_queue_marked_all_the_same() {
        let (cluster, db) = testing::backend().await;
        // A view of its own, which nothing but these workers marks.
        let claimable = Arc::new(ClaimableQueues::default());
        let writer = GroupWriter::start(db.connections.clone(), claimable.clone());
        let (answer, answered) = oneshot::channel();
        drop(answered);
        let job = NewJob::plain("caller-gone", "q", 0);
        writer.send(Write::Submit { job, answer }).expect("send");

        // A bound, not a speed: the worker stores the job, then marks its queue.
        let queues = ["q".to_string()];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while claimable.look(&queues).is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the queue was never marked"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(cluster.sql("tf", "SELECT job_id FROM jobs"), "caller-gone");
    }

    #[tokio::test]
    async fn a_job_the_database_refuses_spoils_none_of_the_jobs_submitted_with_it() {
        let (cluster, db) = testing::backend().await;
        // JSONB cannot hold a NUL character, so this job's statement fails.
        let mut refused = NewJob::plain("refused", "q", 0);
        refused.exclude_agents = vec!["nul\u{0}agent".into()];
        let (first, last) = (
            NewJob::plain("first", "q", 0),
            NewJob::plain("last", "q", 0),
        );
        let client = db.connection().await.expect("connection");

        let outcomes = submit(&client, &[&first, &refused, &last]).await;
        let refusals: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
        assert_eq!(refusals, [false, true, false], "{outcomes:?}");
        assert_eq!(
            cluster.sql(
                "tf",
                "SELECT string_agg(job_id, ' ' ORDER BY seq) FROM jobs"
            ),
            "first last"
        );
    }
}
