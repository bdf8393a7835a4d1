//! The backend's pool of connections, with the database's name for its errors: a
//! database that cannot be reached, or no connection free in time, is `Unavailable` (503).

use std::time::Duration;

use deadpool_postgres::{Pool, PoolError};

use crate::store::error::StoreError;

/// How long a request waits for a free connection before it fails instead of hanging.
pub(super) const POOL_WAIT: Duration = Duration::from_secs(30);

/// The pool, with the database's name for its errors.
#[derive(Clone)]
pub(super) struct Connections {
    pool: Pool,
    /// The database as errors name it (`Database::describe`: no password).
    name: String,
}

impl Connections {
    pub(super) fn new(pool: Pool, name: String) -> Connections {
        Connections { pool, name }
    }
    pub(super) async fn get(&self) -> Result<deadpool_postgres::Client, StoreError> {
        // The pool opens a new connection when none is idle: a database that went away
        // and came back is reconnected to here, without a restart.
        self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(error) => StoreError::Unavailable(format!(
                "the database at {} is unreachable: {}",
                self.name,
                match StoreError::from(error) {
                    StoreError::Database(text) | StoreError::Unavailable(text) => text,
                    other => other.to_string(),
                }
            )),
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "no connection to the database at {} was free within {}s",
                self.name,
                POOL_WAIT.as_secs()
            )),
            other => StoreError::Database(format!("the database at {}: {other}", self.name)),
        })
    }
}
