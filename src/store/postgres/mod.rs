//! PostgreSQL storage: connecting, with TLS through rustls, the schema, and the `Store`'s
//! backend on a pool of connections. Each resource's statements are in a file of their
//! own (`jobs`, `logs`, `agents`, `clients`, `secrets`, `legacy`, `retention`), each
//! implementing its trait of `store/backend.rs`. `tf migrate` copies a SQLite lab into
//! the same schema (`copy`).

mod agents;
mod claimable;
mod clients;
pub mod copy;
mod database;
mod dispatch;
mod group;
mod jobs;
mod legacy;
mod logs;
mod pool;
mod relay;
mod retention;
mod schema;
mod secrets;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::{Map, Value};
use tokio_postgres::NoTls;

use super::claimable::ClaimableQueues;
use super::error::StoreError;
use super::restricted::RestrictedNames;
pub use database::Database;
use pool::{Connections, POOL_WAIT};

/// The `Store`'s records in a PostgreSQL database, through a pool of connections; the
/// submits and claims through the dispatch workers (`group`). Polls of queues with
/// nothing claimable are answered from memory (`claimable`).
pub(crate) struct PostgresBackend {
    /// For connections outside the pool (`relay`); boxed, as it is large and rarely used.
    database: Box<Database>,
    connections: Connections,
    writer: group::GroupWriter,
    /// The queues that may hold a claimable job.
    claimable: Arc<ClaimableQueues>,
    /// Read again once a second old: other servers on the database may change them.
    restricted: RestrictedNames,
}

/// How long the names of the restricted queues are taken as read.
const RESTRICTED_NAMES_AGE: Duration = Duration::from_secs(1);

/// Connections kept open: enough for the requests a server handles at once, few enough
/// for a server's default `max_connections` (100) to serve several tf servers.
const POOL_SIZE: usize = 16;

impl PostgresBackend {
    /// A pool on `database`, whose schema is brought up to date first.
    pub(crate) async fn open(database: &Database) -> Result<PostgresBackend, StoreError> {
        PostgresBackend::open_remarking_every(database, claimable::REMARK).await
    }

    /// `open`, reading the queues with claimable jobs again every `remark`.
    async fn open_remarking_every(
        database: &Database,
        remark: Duration,
    ) -> Result<PostgresBackend, StoreError> {
        let (config, tls) = database.transport()?;
        // A connection is checked only for being closed when it is handed out: a query
        // per checkout would double the round trips of every request. One that broke
        // since then fails its request and is dropped.
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            None => Manager::from_config(config, NoTls, manager_config),
            Some(tls) => Manager::from_config(config, tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|error| StoreError::Database(format!("connection pool: {error}")))?;
        let connections = Connections::new(pool, database.describe());
        let mut client = connections.get().await?;
        schema::migrate(&mut client).await?;
        drop(client);
        let claimable = claimable::read(&connections, remark).await?;
        Ok(PostgresBackend {
            database: Box::new(database.clone()),
            writer: group::GroupWriter::start(connections.clone(), claimable.clone()),
            claimable,
            connections,
            restricted: RestrictedNames::kept_for(RESTRICTED_NAMES_AGE),
        })
    }

    /// Carries `signals`' wake-ups to the other servers on the database and theirs here
    /// (`relay`), for as long as `signals` lives.
    pub(crate) fn relay_wakeups(&self, signals: &Arc<super::signals::Signals>) {
        relay::start(
            (*self.database).clone(),
            self.connections.clone(),
            self.claimable.clone(),
            signals,
            relay::RECHECK,
        );
    }

    /// A connection of the pool (statements prepared on it before are cached).
    async fn connection(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.connections.get().await
    }
}

/// A JSON object stored as text (`col::text`); empty when there is none.
fn object(text: Option<&str>) -> Result<Map<String, Value>, StoreError> {
    match text {
        Some(text) => Ok(serde_json::from_str(text)?),
        None => Ok(Map::new()),
    }
}

/// What the backend's tests share: a backend on a throwaway cluster of its own.
#[cfg(test)]
pub(crate) mod testing {
    use tf_test_support::postgres::Postgres;

    use super::{Database, PostgresBackend};

    /// A backend on a fresh database; the cluster goes when its value is dropped.
    pub(crate) async fn backend() -> (Postgres, PostgresBackend) {
        let cluster = Postgres::start();
        let url = cluster.create_database("tf");
        let database = Database::parse(&url).expect("url");
        let backend = PostgresBackend::open(&database).await.expect("open");
        (cluster, backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_database_is_named_without_its_password() {
        // A port nothing listens on (the discard port, closed on test machines).
        let database =
            Database::parse("postgres://tf:hunter2@127.0.0.1:9/lab?sslmode=disable").unwrap();
        let Err(StoreError::Unavailable(error)) = PostgresBackend::open(&database).await else {
            panic!("a database that is not there opened");
        };
        assert!(
            error.starts_with("the database at postgres://tf@127.0.0.1:9/lab is unreachable"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
    }
}
