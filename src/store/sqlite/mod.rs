//! The SQLite backend: one database file in the data dir, checked before use (`health`),
//! its schema and migrations (`schema`), one writer thread with group commit (`writer`),
//! a small pool of read connections (`readers`), the WAL checkpoints off the writer
//! (`checkpointer`) and online backups (`backup`). Because one process writes, two
//! answers are kept in memory for as long as it does not change them: which queues may
//! hold a claimable job (`store/claimable.rs`) and which queues are restricted
//! (`store/restricted.rs`). The domain operations are in the other files, by resource,
//! as `store/backend.rs` names them.

mod agents;
pub mod backup;
pub(super) mod checkpointer;
mod clients;
pub mod health;
mod jobs;
mod legacy;
mod logs;
pub(super) mod readers;
mod retention;
pub(crate) mod schema;
mod secrets;
pub(super) mod writer;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use super::claimable::{ClaimableQueues, QUEUES_WITH_CLAIMABLE_JOBS};
use super::logins::InMemoryLoginFailures;
use super::restricted::RestrictedNames;
use checkpointer::Checkpointer;
use readers::Readers;
use writer::Writer;

/// How hard SQLite pushes each commit to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Survives a crash of the process (WAL + `synchronous=NORMAL`).
    Normal,
    /// Also survives a power cut (`synchronous=FULL`).
    Full,
}

const READ_CONNECTIONS: usize = 4;

/// The writer's page cache, as `PRAGMA cache_size` takes it: negative, in KiB.
const WRITER_CACHE_KIB: i64 = -16384;

pub(crate) struct SqliteBackend {
    writer: Writer,
    readers: Readers,
    /// Which queues may have a job to claim; shared with the writes that change that.
    claimable: Arc<ClaimableQueues>,
    restricted: Arc<RestrictedNames>,
    /// Failed logins: in memory, as this server is the only one on the database.
    login_failures: InMemoryLoginFailures,
    /// Held for its thread; dropped after the writer, whose last act is a full checkpoint.
    _checkpointer: Checkpointer,
}

impl SqliteBackend {
    /// Opens (creating and migrating as needed) the database of `data_dir`, with its
    /// writer, readers and checkpoint threads.
    pub(super) fn open(data_dir: &Path, sync: SyncMode) -> anyhow::Result<SqliteBackend> {
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
        let claimable = claimable_queues(&writer_connection)
            .with_context(|| format!("cannot read the queues of {}", db_path.display()))?;
        let readers = (0..READ_CONNECTIONS)
            .map(|_| open_connection(&db_path, sync))
            .collect::<rusqlite::Result<Vec<_>>>()
            .context("cannot open read connections")?;
        let checkpointer = Checkpointer::start(open_connection(&db_path, sync)?)
            .context("cannot start the checkpoint thread")?;
        Ok(SqliteBackend {
            writer: Writer::start(writer_connection).context("cannot start the writer thread")?,
            readers: Readers::new(readers),
            claimable: Arc::new(claimable),
            restricted: Arc::new(RestrictedNames::kept()),
            login_failures: InMemoryLoginFailures::default(),
            _checkpointer: checkpointer,
        })
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

/// The queues with claimable jobs in a database just opened.
fn claimable_queues(db: &Connection) -> rusqlite::Result<ClaimableQueues> {
    let view = ClaimableQueues::default();
    let mut query = db.prepare(QUEUES_WITH_CLAIMABLE_JOBS)?;
    for queue in query.query_map([], |row| row.get::<_, String>(0))? {
        view.mark(&queue?);
    }
    Ok(view)
}
