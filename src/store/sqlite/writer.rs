//! The single writer thread. Every write in the server is a closure sent here; the thread
//! drains whatever is queued, runs each closure in its own savepoint inside one shared
//! transaction, commits once (group commit), and only then answers each caller. A caller
//! is therefore never told "done" before its data is on disk, and one failing write does
//! not undo the others of its group.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::error::StoreError;

/// How many queued writes may share one transaction.
const MAX_GROUP: usize = 512;

/// What answers the caller once its group's commit has succeeded or failed.
type Finisher = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A queued write: runs inside the group's transaction (gets no connection when there is
/// no transaction to run in) and returns its finisher and its own failure, if any.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (Finisher, Option<StoreError>) + Send>;

pub struct Writer {
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(connection: Connection) -> std::io::Result<Writer> {
        let (queue, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tf-store-writer".into())
            .spawn(move || run(connection, receiver))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Runs `operation` in the next group and waits until that group has committed. If
    /// it fails, its changes are undone (a savepoint) and the rest of the group commits.
    pub async fn write<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_then(operation, || {}).await
    }

    /// Like `write`, then runs `after_commit` on the writer thread once the change is
    /// committed, even if the caller no longer waits: what is kept in memory beside the
    /// database (`restricted`) is brought up to date however the request ends.
    pub async fn write_then<T, F>(
        &self,
        operation: F,
        after_commit: impl FnOnce() + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(
            move |connection| in_savepoint(connection, operation),
            after_commit,
        )
        .await
    }

    /// Like `write`, for an operation that changes the database with at most one
    /// statement: SQLite makes a single statement atomic by itself, so the savepoint (a
    /// tenth of the cost of a small write) is skipped.
    pub async fn write_one_statement<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(operation, || {}).await
    }

    async fn submit<T, F>(
        &self,
        operation: F,
        after_commit: impl FnOnce() + Send + 'static,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |transaction| {
            let outcome = match transaction {
                Some(connection) => operation(connection),
                None => Err(StoreError::Closed),
            };
            let failure = outcome.as_ref().err().cloned();
            let finish: Finisher = Box::new(move |committed: Result<(), StoreError>| {
                if committed.is_ok() && outcome.is_ok() {
                    after_commit();
                }
                let _ = answer.send(committed.and(outcome));
            });
            (finish, failure)
        });
        self.queue
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for Writer {
    /// Closing the queue lets the thread finish what was sent, commit and close the file.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn in_savepoint<T>(
    transaction: &Connection,
    operation: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = |sql: &str| execute_cached(transaction, sql);
    run("SAVEPOINT one_write")?;
    match operation(transaction) {
        Ok(value) => {
            run("RELEASE one_write")?;
            Ok(value)
        }
        Err(error) => {
            // If the rollback fails too, the writer notices the aborted transaction; the
            // caller should hear the first cause (a full disk, say).
            let _ = run("ROLLBACK TO one_write").and_then(|()| run("RELEASE one_write"));
            Err(error)
        }
    }
}

/// Runs a statement without parameters through the statement cache: transaction control
/// runs for every write, and parsing it each time is a measurable share of a submit.
fn execute_cached(connection: &Connection, sql: &str) -> Result<(), StoreError> {
    connection.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn run(connection: Connection, receiver: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = receiver.recv() {
        group.push(first);
        group.extend(receiver.try_iter().take(MAX_GROUP - 1));
        run_group(&connection, &mut group);
    }
    let _ = connection.execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);");
}

fn run_group(connection: &Connection, group: &mut Vec<Job>) {
    if let Err(error) = execute_cached(connection, "BEGIN IMMEDIATE") {
        for job in group.drain(..) {
            job(None).0(Err(error.clone()));
        }
        return;
    }
    let mut finishers = Vec::with_capacity(group.len());
    let mut aborted: Option<StoreError> = None;
    for job in group.drain(..) {
        if aborted.is_some() {
            finishers.push(job(None).0);
            continue;
        }
        let (finish, failure) = job(Some(connection));
        finishers.push(finish);
        // Some failures (a full disk, an I/O error) make SQLite roll the whole transaction
        // back: what ran before is gone, and what follows must not run outside it.
        if connection.is_autocommit() {
            aborted =
                Some(failure.unwrap_or_else(|| {
                    StoreError::Database("the transaction was rolled back".into())
                }));
        }
    }
    let committed = match aborted {
        Some(error) => Err(error),
        None => execute_cached(connection, "COMMIT").inspect_err(|_| {
            let _ = execute_cached(connection, "ROLLBACK");
        }),
    };
    for finish in finishers {
        finish(committed.clone());
    }
}
