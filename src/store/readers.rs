//! A small pool of read-only uses of SQLite connections. Reads run on tokio's blocking
//! threads so they never stall the async workers, and in WAL mode they never wait for
//! the writer.

use std::sync::Mutex;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::{Result, StoreError};

pub struct Readers {
    idle: Mutex<Vec<Connection>>,
    available: Semaphore,
}

impl Readers {
    pub fn new(connections: Vec<Connection>) -> Readers {
        Readers {
            available: Semaphore::new(connections.len()),
            idle: Mutex::new(connections),
        }
    }

    pub async fn read<T, F>(&self, query: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .available
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let connection = self
            .idle
            .lock()
            .map_err(|_| StoreError::Closed)?
            .pop()
            .ok_or(StoreError::Closed)?;
        let (connection, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = query(&connection);
            (connection, outcome)
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        self.idle
            .lock()
            .map_err(|_| StoreError::Closed)?
            .push(connection);
        outcome
    }
}
