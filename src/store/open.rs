//! Opening the store: a data dir claimed for the server (locked against a second one, its
//! database checked), or opened beside it for `tf clients`; the database's connections and
//! threads; and the `Store` they make up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use super::blobs::BlobDir;
use super::claimable::ClaimableQueues;
use super::restricted::RestrictedNames;
use super::secrets_key::SecretsKey;
use super::signals::Signals;
use super::sqlite::checkpointer::Checkpointer;
use super::sqlite::health;
use super::sqlite::readers::Readers;
use super::sqlite::schema;
use super::sqlite::writer::Writer;
use crate::private_file;

/// How hard SQLite pushes each commit to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Survives a crash of the process (WAL + `synchronous=NORMAL`).
    Normal,
    /// Also survives a power cut (`synchronous=FULL`).
    Full,
}

/// The lab's storage. Cheap to share behind an `Arc`.
pub struct Store {
    pub(super) writer: Writer,
    pub(super) readers: Readers,
    pub(super) blobs: BlobDir,
    pub(super) signals: Signals,
    /// Which queues may have a job to claim; shared with the writes that change that.
    pub(super) claimable: Arc<ClaimableQueues>,
    pub(super) restricted: Arc<RestrictedNames>,
    /// The master key of the secrets store; without one there is no secrets store.
    pub(super) secrets: Option<SecretsKey>,
    /// Held for its thread; dropped after the writer, whose last act is a full checkpoint.
    _checkpointer: Checkpointer,
    /// The server's exclusive lock on the data dir, released when the process ends.
    _server_lock: Option<std::fs::File>,
}

const READ_CONNECTIONS: usize = 4;

/// The writer's page cache, as `PRAGMA cache_size` takes it: negative, in KiB.
const WRITER_CACHE_KIB: i64 = -16384;

/// A data dir the server has claimed: locked against a second server, and its database
/// checked (see `health`). Nothing but the lock and the check has been written yet, so
/// the server can create its key files only once the data dir is known to be sound.
pub struct ServerDataDir {
    path: PathBuf,
    lock: std::fs::File,
    /// Held until the store is open (see `lock_while_opening`).
    opening: std::fs::File,
}

impl ServerDataDir {
    /// Creates `data_dir` if needed, takes its lock and checks its database; a lost one
    /// is refused, or set aside with `IfLost::StartAfresh`.
    pub fn claim(data_dir: &Path, if_lost: health::IfLost) -> anyhow::Result<ServerDataDir> {
        private_file::create_dir(data_dir)?;
        let lock = lock_for_server(data_dir)?;
        let opening = lock_while_opening(data_dir)?;
        health::check_data_dir(data_dir, health::Check::Integrity, if_lost)?;
        Ok(ServerDataDir {
            path: data_dir.to_path_buf(),
            lock,
            opening,
        })
    }

    /// Opens (creating and migrating as needed) the store, which owns the uploads in
    /// progress and sweeps orphaned archives.
    pub fn open(self, sync: SyncMode, secrets: Option<SecretsKey>) -> anyhow::Result<Store> {
        let mut store = Store::open_with(&self.path, sync, secrets, true)?;
        store._server_lock = Some(self.lock);
        drop(self.opening);
        Ok(store)
    }
}

impl Store {
    /// Opens the store for a tool on the lab host (`tf clients`), which may run while
    /// the server does and must leave its uploads alone. A lost database is refused.
    pub fn open_beside_server(data_dir: &Path) -> anyhow::Result<Store> {
        private_file::create_dir(data_dir)?;
        let _opening = lock_while_opening(data_dir)?;
        health::check_data_dir(data_dir, health::Check::Readable, health::IfLost::Refuse)?;
        Store::open_with(data_dir, SyncMode::Normal, None, false)
    }

    fn open_with(
        data_dir: &Path,
        sync: SyncMode,
        secrets: Option<SecretsKey>,
        owns_uploads: bool,
    ) -> anyhow::Result<Store> {
        use anyhow::Context;
        let db_path = data_dir.join(health::DATABASE_FILE);
        create_private_file(&db_path)?;
        let mut writer_connection = open_connection(&db_path, sync)
            .with_context(|| format!("cannot open database {}", db_path.display()))?;
        // The checkpoint thread (see `checkpointer`) copies most pages out of the WAL; the
        // writer's own checkpoint then finds little left to do, and, running between
        // commits, lets the WAL start over instead of growing under constant load.
        writer_connection.pragma_update(None, "wal_autocheckpoint", 16000)?;
        writer_connection.pragma_update(None, "journal_size_limit", 128 << 20)?;
        // 16 MiB of page cache: the inner pages of the indexes the writer touches, and the
        // right edges where rows are added, stay in memory. No more: when a commit split a
        // B-tree page out of order (claims do, reusing freed pages), SQLite scans its whole
        // page cache as the transaction ends. With 64 MiB that scan took two fifths of the
        // writer's time under claims; 16 MiB claims 25% faster and logs 5-10% slower.
        writer_connection.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        schema::migrate(&mut writer_connection)
            .with_context(|| format!("cannot migrate database {}", db_path.display()))?;
        let claimable = ClaimableQueues::read(&writer_connection)
            .with_context(|| format!("cannot read the queues of {}", db_path.display()))?;
        let readers = (0..READ_CONNECTIONS)
            .map(|_| open_connection(&db_path, sync))
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("cannot open read connections")?;
        let blobs_root = data_dir.join("blobs");
        let blobs = if owns_uploads {
            let (store_id, has_archives) = schema::store_identity(&writer_connection)?;
            BlobDir::open_for_server(&blobs_root, &store_id, has_archives)
        } else {
            BlobDir::open_beside_server(&blobs_root)
        }
        .with_context(|| format!("cannot open {}", blobs_root.display()))?;
        let checkpointer = Checkpointer::start(open_connection(&db_path, sync)?)
            .context("cannot start the checkpoint thread")?;
        Ok(Store {
            _checkpointer: checkpointer,
            writer: Writer::start(writer_connection).context("cannot start the writer thread")?,
            readers: Readers::new(readers),
            blobs,
            signals: Signals::default(),
            claimable: Arc::new(claimable),
            restricted: Arc::default(),
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

/// Creates `path` empty, readable by the server's user only, unless it exists. SQLite
/// gives the database's WAL files the same mode, whatever the umask.
fn create_private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(anyhow::anyhow!("cannot create {}: {error}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Takes `<data_dir>/tf.lock`, so a second server on the same data dir stops at once
/// instead of clearing the first one's uploads in progress.
pub(crate) fn lock_for_server(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("tf.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        anyhow::bail!(
            "another tf serve is using the data dir {}",
            data_dir.display()
        );
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

fn open_connection(path: &Path, sync: SyncMode) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match sync {
        SyncMode::Normal => "NORMAL",
        SyncMode::Full => "FULL",
    };
    connection.pragma_update(None, "synchronous", synchronous)?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}
