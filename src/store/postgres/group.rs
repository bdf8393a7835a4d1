//! Group commit on PostgreSQL, as the SQLite writer does it: submits and claims, the
//! writes every agent and client makes all the time, are queued to one task that runs
//! whatever has gathered in one transaction, its statements sent together (pipelined),
//! and commits once. Each commit waits for the disk; one commit for a hundred writes
//! instead of a hundred is what lets a lab submit and claim tens of thousands of jobs a
//! second. A caller hears "done" only once its group has committed.
//!
//! A write that fails (or a commit that fails) undoes the whole group: then each write
//! of it runs again alone, in its own transaction, so one bad write costs the others
//! nothing but time.

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::GenericClient;
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::dispatch::{claim, claim_many, insert, Assignment};
use super::pool::Connections;
use crate::store::error::{Result, StoreError};
use crate::store::jobs::{ClaimedJob, NewJob};

/// How many queued writes may share one transaction.
const MAX_GROUP: usize = 256;

/// Groups in flight at once: while one waits for its commit to reach the disk, the next
/// gathers and runs (PostgreSQL flushes their commits together).
const WORKERS: usize = 4;

/// A write that may share its transaction with others, with what it found once run.
pub(super) enum Write {
    Submit {
        job: NewJob,
        done: Option<Result<()>>,
        answer: oneshot::Sender<Result<()>>,
    },
    Claim {
        queues: Vec<String>,
        agent: String,
        done: Option<Result<Option<ClaimedJob>>>,
        answer: oneshot::Sender<Result<Option<ClaimedJob>>>,
    },
}

impl Write {
    /// Runs the write's statement in the caller's transaction, unless it was done
    /// together with others (see `run_group`).
    async fn run(&mut self, db: &impl GenericClient) {
        if let Write::Claim {
            queues,
            agent,
            done: done @ None,
            ..
        } = self
        {
            *done = Some(claim(db, queues, agent).await);
        }
    }

    /// Whether the write failed in a way that aborts its transaction (a duplicate job id
    /// is refused without an error of the database's).
    fn spoiled(&self) -> bool {
        fn spoils<T>(done: &Option<Result<T>>) -> bool {
            matches!(done, Some(Err(error)) if !matches!(error, StoreError::DuplicateJob(_)))
        }
        match self {
            Write::Submit { done, .. } => spoils(done),
            Write::Claim { done, .. } => spoils(done),
        }
    }

    /// Tells the caller what its write came to, given how its transaction ended: its own
    /// failure, else the transaction's, else what it found.
    fn answer(self, committed: &Result<()>) {
        fn outcome<T>(done: Option<Result<T>>, committed: &Result<()>) -> Result<T> {
            match done {
                Some(Err(error)) => Err(error),
                done => committed
                    .clone()
                    .and(done.unwrap_or(Err(StoreError::Closed))),
            }
        }
        match self {
            Write::Submit { done, answer, .. } => {
                let _ = answer.send(outcome(done, committed));
            }
            Write::Claim { done, answer, .. } => {
                let _ = answer.send(outcome(done, committed));
            }
        }
    }
}

/// The queue to the group-commit task.
pub(super) struct GroupWriter {
    queue: mpsc::UnboundedSender<Write>,
}

impl GroupWriter {
    /// Starts the task, which takes its connections from `connections`; it ends when
    /// the writer is dropped.
    pub(super) fn start(connections: Connections) -> GroupWriter {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WORKERS {
            tokio::spawn(run(connections.clone(), receiver.clone()));
        }
        GroupWriter { queue }
    }

    pub(super) async fn submit(&self, job: NewJob) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        self.send(Write::Submit {
            job,
            done: None,
            answer,
        })?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn claim(&self, queues: &[String], agent: &str) -> Result<Option<ClaimedJob>> {
        let (answer, answered) = oneshot::channel();
        self.send(Write::Claim {
            queues: queues.to_vec(),
            agent: agent.to_string(),
            done: None,
            answer,
        })?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    fn send(&self, write: Write) -> Result<()> {
        self.queue.send(write).map_err(|_| StoreError::Closed)
    }
}

/// One worker: takes what has gathered in the queue (waiting its turn), runs it as a
/// group, answers, and again.
async fn run(connections: Connections, receiver: Arc<Mutex<mpsc::UnboundedReceiver<Write>>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.lock().await.recv_many(&mut group, MAX_GROUP).await > 0 {
        let committed = run_group(&connections, &mut group).await;
        if committed.is_err() && group.len() > 1 {
            // Each again in a transaction of its own, answered at once.
            for mut write in group.drain(..) {
                let committed = run_group(&connections, std::slice::from_mut(&mut write)).await;
                write.answer(&committed);
            }
        }
        for write in group.drain(..) {
            write.answer(&committed);
        }
    }
}

/// The group's claims, those of agents polling the same queues together (`claim_many`);
/// a claim left unsure keeps no outcome, for `Write::run`.
async fn claim_together(db: &impl GenericClient, group: &mut [Write]) -> Result<()> {
    let mut by_queues: BTreeMap<Vec<String>, Vec<usize>> = BTreeMap::new();
    for (index, write) in group.iter().enumerate() {
        if let Write::Claim { queues, .. } = write {
            by_queues.entry(queues.clone()).or_default().push(index);
        }
    }
    for (queues, claimers) in by_queues {
        let agents: Vec<&str> = claimers
            .iter()
            .filter_map(|&index| match &group[index] {
                Write::Claim { agent, .. } => Some(agent.as_str()),
                Write::Submit { .. } => None,
            })
            .collect();
        let assignments = claim_many(db, &queues, &agents).await?;
        for (index, assignment) in claimers.into_iter().zip(assignments) {
            if let Write::Claim { done, .. } = &mut group[index] {
                *done = match assignment {
                    Assignment::Job(job) => Some(Ok(Some(job))),
                    Assignment::Nothing => Some(Ok(None)),
                    Assignment::Unsure => None,
                };
            }
        }
    }
    Ok(())
}

/// Runs `group` in one transaction, its statements sent together, and commits.
async fn run_group(connections: &Connections, group: &mut [Write]) -> Result<()> {
    let mut client = connections.get().await?;
    let transaction = client.transaction().await?;
    // The submits in one statement, then the claims, sent together.
    let jobs: Vec<&NewJob> = group
        .iter()
        .filter_map(|write| match write {
            Write::Submit { job, .. } => Some(job),
            Write::Claim { .. } => None,
        })
        .collect();
    let mut submitted = match jobs.is_empty() {
        true => Vec::new(),
        false => insert(&transaction, &jobs).await?,
    }
    .into_iter();
    for write in group.iter_mut() {
        if let Write::Submit { done, .. } = write {
            *done = submitted.next();
        }
    }
    claim_together(&transaction, group).await?;
    // Claims the shared statements left unsure of, each on its own, sent together.
    join_all(group.iter_mut().map(|write| write.run(&transaction))).await;
    if group.iter().any(Write::spoiled) {
        return Err(StoreError::Database("a write of the group failed".into()));
    }
    Ok(transaction.commit().await?)
}
