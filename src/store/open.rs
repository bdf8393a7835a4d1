//! Opening the store: a data dir claimed for the server (locked against a second one, its
//! SQLite database checked), or opened beside it for `tf clients`; the backend chosen
//! (`DatabaseChoice`); and the `Store` they make up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backend::Retention as _;
use super::blobs::BlobDir;
use super::data_dir::DataDirUse;
use super::postgres::{self, PostgresBackend};
use super::secrets_key::SecretsKey;
use super::signals::Signals;
use super::sqlite::{health, SqliteBackend, SyncMode};
use crate::private_file;

/// The database a `Store` keeps its records in.
pub(crate) enum Backend {
    Sqlite(SqliteBackend),
    Postgres(PostgresBackend),
}

/// Runs `$call` with `$db` bound to the store's backend, whichever it is: each arm is
/// checked against that backend's own implementation of the traits below.
macro_rules! on_backend {
    ($store:expr, $db:ident => $call:expr) => {
        match &$store.backend {
            $crate::store::open::Backend::Sqlite($db) => $call,
            $crate::store::open::Backend::Postgres($db) => $call,
        }
    };
}
pub(crate) use on_backend;

/// Where a lab keeps its records.
#[derive(Debug, Clone)]
pub enum DatabaseChoice {
    /// SQLite, in the data dir (`tf.db`), committed as hard as `SyncMode` says.
    Sqlite(SyncMode),
    /// A PostgreSQL database; the data dir keeps the keys and the archives.
    Postgres(Box<postgres::Database>),
}

/// The lab's storage. Cheap to share behind an `Arc`.
pub struct Store {
    pub(super) backend: Backend,
    pub(super) blobs: BlobDir,
    pub(super) signals: Arc<Signals>,
    /// The master key of the secrets store; without one there is no secrets store.
    pub(super) secrets: Option<SecretsKey>,
    /// The server's exclusive lock on the data dir, released when the process ends.
    _server_lock: Option<std::fs::File>,
}

/// A data dir the server has claimed: locked against a second server, and (on SQLite) its
/// database checked (see `health`). Nothing but the lock and the check has been written
/// yet, so the server can create its key files only once the data dir is known to be sound.
pub struct ServerDataDir {
    path: PathBuf,
    lock: std::fs::File,
    /// Held until the store is open (see `lock_while_opening`).
    opening: std::fs::File,
}

impl ServerDataDir {
    /// Creates `data_dir` if needed, takes its lock and, when the records are kept there,
    /// checks its database; a lost one is refused, or set aside with `IfLost::StartAfresh`.
    pub fn claim(
        data_dir: &Path,
        database: &DatabaseChoice,
        if_lost: health::IfLost,
    ) -> anyhow::Result<ServerDataDir> {
        private_file::create_dir(data_dir)?;
        let lock = lock_for_server(data_dir, data_dir_use(database))?;
        let opening = lock_while_opening(data_dir)?;
        if let DatabaseChoice::Sqlite(_) = database {
            health::check_data_dir(data_dir, health::Check::Integrity, if_lost)?;
        }
        Ok(ServerDataDir {
            path: data_dir.to_path_buf(),
            lock,
            opening,
        })
    }

    /// Opens (creating and migrating as needed) the store, which owns the uploads in
    /// progress and sweeps orphaned archives.
    pub async fn open(
        self,
        database: DatabaseChoice,
        secrets: Option<SecretsKey>,
    ) -> anyhow::Result<Store> {
        let mut store = Store::open_with(&self.path, database, secrets, true).await?;
        store._server_lock = Some(self.lock);
        drop(self.opening);
        Ok(store)
    }
}

impl Store {
    /// Opens the store for a tool on the lab host (`tf clients`), which may run while
    /// the server does and must leave its uploads alone. A lost SQLite database is refused.
    pub async fn open_beside_server(
        data_dir: &Path,
        database: DatabaseChoice,
    ) -> anyhow::Result<Store> {
        private_file::create_dir(data_dir)?;
        let _opening = lock_while_opening(data_dir)?;
        if let DatabaseChoice::Sqlite(_) = database {
            health::check_data_dir(data_dir, health::Check::Readable, health::IfLost::Refuse)?;
        }
        Store::open_with(data_dir, database, None, false).await
    }

    async fn open_with(
        data_dir: &Path,
        database: DatabaseChoice,
        secrets: Option<SecretsKey>,
        owns_uploads: bool,
    ) -> anyhow::Result<Store> {
        use anyhow::Context;
        let data_dir_use = data_dir_use(&database);
        let backend = match database {
            DatabaseChoice::Sqlite(sync) => Backend::Sqlite(SqliteBackend::open(data_dir, sync)?),
            DatabaseChoice::Postgres(database) => {
                Backend::Postgres(PostgresBackend::open(&database).await?)
            }
        };
        let blobs_root = data_dir.join("blobs");
        let blobs = if owns_uploads {
            let (store_id, has_archives) = match &backend {
                Backend::Sqlite(db) => db.identity().await,
                Backend::Postgres(db) => db.identity().await,
            }?;
            BlobDir::open_for_server(&blobs_root, &store_id, has_archives, data_dir_use)
        } else {
            BlobDir::open_beside_server(&blobs_root)
        }
        .with_context(|| format!("cannot open {}", blobs_root.display()))?;
        let signals = Arc::new(Signals::default());
        // Only a server has long-polls to wake, and wakes other servers' by its writes.
        if let (true, Backend::Postgres(db)) = (owns_uploads, &backend) {
            db.relay_wakeups(&signals);
        }
        Ok(Store {
            backend,
            blobs,
            signals,
            secrets,
            _server_lock: None,
        })
    }
}

impl Store {
    /// Ends every long-poll now (with the answer it would give at its deadline): the
    /// server is stopping.
    pub fn end_long_polls(&self) {
        self.signals.close();
    }
}

/// How a server with its records in `database` holds its data dir.
fn data_dir_use(database: &DatabaseChoice) -> DataDirUse {
    match database {
        DatabaseChoice::Sqlite(_) => DataDirUse::Alone,
        DatabaseChoice::Postgres(_) => DataDirUse::Shared,
    }
}

/// Takes `<data_dir>/tf.lock`: exclusively for a server alone on it, so that a second
/// one stops at once instead of clearing the first one's uploads in progress; shared by
/// the replicas of a PostgreSQL lab, which then exclude only a server alone.
pub(crate) fn lock_for_server(
    data_dir: &Path,
    data_dir_use: DataDirUse,
) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("tf.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let (operation, holder) = match data_dir_use {
        DataDirUse::Alone => (libc::LOCK_EX, "another tf serve"),
        DataDirUse::Shared => (
            libc::LOCK_SH,
            "a tf serve keeping its records in SQLite there",
        ),
    };
    if flock(&file, operation | libc::LOCK_NB).is_err() {
        anyhow::bail!("{holder} is using the data dir {}", data_dir.display());
    }
    Ok(file)
}

/// A lock on the data dir itself, held while a process checks, creates and migrates its
/// database, and released once the store is open: a server's first start and `tf
/// clients` on a fresh data dir would otherwise each find the other's half-made database.
fn lock_while_opening(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let lock = |directory: std::fs::File| {
        if flock(&directory, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            tracing::info!(
                "waiting for another tf process to finish opening {}",
                data_dir.display()
            );
            flock(&directory, libc::LOCK_EX)?;
        }
        Ok(directory)
    };
    std::fs::File::open(data_dir)
        .and_then(lock)
        .map_err(|e| anyhow::anyhow!("cannot lock {}: {e}", data_dir.display()))
}

fn flock(file: &std::fs::File, operation: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller owns.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
