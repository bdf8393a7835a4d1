//! A small pool of read connections. In WAL mode reads never wait for the writer. Reads
//! that may take long (listings, logs, pages) run on tokio's blocking threads so they
//! never stall the async workers; a lookup of one row by its key takes microseconds, less
//! than handing it to another thread and back, so it runs where it is asked.

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::store::error::{Result, StoreError};

pub struct Readers {
    idle: Pool,
    available: Arc<Semaphore>,
}

impl Readers {
    pub fn new(connections: Vec<Connection>) -> Readers {
        Readers {
            available: Arc::new(Semaphore::new(connections.len())),
            idle: Arc::new(Mutex::new(connections)),
        }
    }

    pub async fn read<T, F>(&self, query: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .available
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let idle = self.idle.clone();
        // The connection is leased inside the blocking task, which runs to the end even when
        // the request that started it is dropped (a client hanging up); the lease gives it
        // back however the query ends, panics included.
        tokio::task::spawn_blocking(move || {
            let lease = Lease::take(idle)?;
            let outcome = query(lease.connection());
            drop(lease);
            drop(permit);
            outcome
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

impl Readers {
    /// A read of a few rows by key (an index probe), run on the calling thread when a
    /// connection is free, else like `read`.
    pub async fn lookup<T, F>(&self, query: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let Ok(permit) = self.available.try_acquire() else {
            return self.read(query).await;
        };
        let lease = Lease::take(self.idle.clone())?;
        let outcome = query(lease.connection());
        drop(lease);
        drop(permit);
        outcome
    }
}

type Pool = Arc<Mutex<Vec<Connection>>>;

fn lock(pool: &Pool) -> std::sync::MutexGuard<'_, Vec<Connection>> {
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Lease {
    connection: Option<Connection>,
    pool: Pool,
}

impl Lease {
    fn take(pool: Pool) -> Result<Lease> {
        let connection = lock(&pool).pop().ok_or(StoreError::Closed)?;
        Ok(Lease {
            connection: Some(connection),
            pool,
        })
    }

    fn connection(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            lock(&self.pool).push(connection);
        }
    }
}
