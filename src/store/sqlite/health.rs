//! Whether a data dir's database can be trusted, checked before the store opens it. A
//! missing, empty or corrupt `tf.db` next to archives or keys means the database was
//! lost: a fresh one in its place would orphan every archive, so opening is refused. An
//! operator who accepts the loss starts afresh, and the old data is set aside, never
//! deleted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};

use crate::job::time;
use crate::private_file;

pub const DATABASE_FILE: &str = "tf.db";

/// The key files the server creates in the data dir unless configured elsewhere.
pub const KEY_FILES: &[&str] = &["jwt-signing.key", "secrets.key"];

/// A `quick_check` still running after this is cut short: the start of a server with a
/// huge database must not wait minutes for it.
const INTEGRITY_CHECK_BUDGET: Duration = Duration::from_secs(10);

/// How far a present database is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Its header and schema version (cheap, for tools beside a running server).
    Readable,
    /// Also `PRAGMA quick_check`, within `INTEGRITY_CHECK_BUDGET`.
    Integrity,
}

/// What to do with a database that was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfLost {
    Refuse,
    /// Set the old data aside and start with an empty database.
    StartAfresh,
}

/// What `tf.db` turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum DatabaseState {
    Missing,
    /// No bytes, or an SQLite database without a single table.
    Empty,
    /// Not an SQLite database, damaged, or somebody else's; with the reason.
    Unusable(String),
    Healthy,
}

impl DatabaseState {
    /// "`<path>` is missing", "… is empty", "… is not a usable tf database (…)".
    pub fn describe(&self, path: &Path) -> String {
        let path = path.display();
        match self {
            DatabaseState::Missing => format!("{path} is missing"),
            DatabaseState::Empty => format!("{path} is empty"),
            DatabaseState::Unusable(reason) => {
                format!("{path} is not a usable tf database ({reason})")
            }
            DatabaseState::Healthy => format!("{path} is a healthy tf database"),
        }
    }
}

pub fn inspect(path: &Path, check: Check) -> DatabaseState {
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => DatabaseState::Missing,
        Err(error) => DatabaseState::Unusable(error.to_string()),
        Ok(metadata) if metadata.len() == 0 => DatabaseState::Empty,
        Ok(_) => inspect_contents(path, check)
            .unwrap_or_else(|error| DatabaseState::Unusable(error.to_string())),
    }
}

fn inspect_contents(path: &Path, check: Check) -> rusqlite::Result<DatabaseState> {
    // Read-write, without create: a WAL database is read through its shared-memory index.
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.busy_timeout(Duration::from_secs(10))?;
    let version: i64 = db.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version == 0 {
        let tables: i64 =
            db.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))?;
        return Ok(if tables == 0 {
            DatabaseState::Empty
        } else {
            DatabaseState::Unusable("it has tables but no tf schema version".into())
        });
    }
    if check == Check::Integrity {
        if let Some(problems) = quick_check(&db)? {
            return Ok(DatabaseState::Unusable(format!(
                "PRAGMA quick_check found: {problems}"
            )));
        }
    }
    Ok(DatabaseState::Healthy)
}

/// The problems `quick_check` finds, `None` if none (or if it ran out of time).
fn quick_check(db: &Connection) -> rusqlite::Result<Option<String>> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let interrupt = db.get_interrupt_handle();
    let (finished, wait) = channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(INTEGRITY_CHECK_BUDGET) {
            interrupt.interrupt();
        }
    });
    let verdict = db.prepare("PRAGMA quick_check(5)").and_then(|mut query| {
        query
            .query_map([], |row| row.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()
    });
    drop(finished);
    let _ = watchdog.join();
    match verdict {
        Ok(lines) if lines == ["ok"] => Ok(None),
        Ok(lines) => Ok(Some(lines.join("; "))),
        Err(error)
            if error.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) =>
        {
            tracing::info!(
                "the database check (quick_check) was cut short after {}s: the database is large",
                INTEGRITY_CHECK_BUDGET.as_secs()
            );
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Data an earlier database left in the data dir.
#[derive(Debug, Default)]
struct PreviousData {
    archives: usize,
    /// Key files and a write-ahead log.
    files: Vec<&'static str>,
}

impl PreviousData {
    fn find(data_dir: &Path) -> std::io::Result<PreviousData> {
        let mut found = PreviousData {
            archives: crate::store::blobs::archive_count(&data_dir.join("blobs"))?,
            files: Vec::new(),
        };
        for name in KEY_FILES.iter().chain(&["tf.db-wal"]) {
            if data_dir.join(name).metadata().is_ok_and(|m| m.len() > 0) {
                found.files.push(name);
            }
        }
        Ok(found)
    }

    fn is_empty(&self) -> bool {
        self.archives == 0 && self.files.is_empty()
    }
}

impl fmt::Display for PreviousData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.archives > 0 {
            let plural = if self.archives == 1 { "" } else { "s" };
            parts.push(format!("{} archive{plural} in blobs/", self.archives));
        }
        parts.extend(self.files.iter().map(|name| name.to_string()));
        f.write_str(&parts.join(", "))
    }
}

/// Checks `data_dir`'s database before it is opened. A database that is lost (missing or
/// empty next to earlier data) or unusable is refused, or with `IfLost::StartAfresh`
/// set aside with everything that belonged to it.
pub fn check_data_dir(data_dir: &Path, check: Check, if_lost: IfLost) -> anyhow::Result<()> {
    let path = data_dir.join(DATABASE_FILE);
    let state = inspect(&path, check);
    let problem = match &state {
        DatabaseState::Healthy => None,
        DatabaseState::Missing | DatabaseState::Empty => {
            let previous = PreviousData::find(data_dir)
                .with_context(|| format!("cannot look into {}", data_dir.display()))?;
            (!previous.is_empty()).then(|| {
                format!(
                    "{}, but the data dir holds {previous} from an earlier database",
                    state.describe(&path)
                )
            })
        }
        DatabaseState::Unusable(_) => Some(state.describe(&path)),
    };
    let Some(problem) = problem else {
        if if_lost == IfLost::StartAfresh {
            tracing::info!("--start-afresh: the database is usable, nothing was set aside");
        }
        return Ok(());
    };
    match if_lost {
        IfLost::Refuse => bail!(
            "{problem}. Restore the data dir from a backup (docs/operations.md, \"Backup and \
             restore\"), or start `tf serve --start-afresh` to set the old data aside and \
             begin with an empty database."
        ),
        IfLost::StartAfresh => {
            let aside = set_aside(data_dir)?;
            tracing::warn!(
                "{problem}: starting afresh; the old data is in {} (delete it once it is \
                 not needed)",
                aside.display()
            );
            Ok(())
        }
    }
}

/// Moves the database and everything that belonged to it into a new directory
/// `set-aside-<time>` of the data dir; returns that directory.
fn set_aside(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let aside = data_dir.join(format!("set-aside-{}", time::render(time::now())));
    private_file::create_dir(&aside)?;
    let database_files = [DATABASE_FILE, "tf.db-wal", "tf.db-shm", "blobs"];
    for name in database_files.iter().chain(KEY_FILES) {
        let from = data_dir.join(name);
        if from.symlink_metadata().is_ok() {
            std::fs::rename(&from, aside.join(name)).with_context(|| {
                format!("cannot move {} to {}", from.display(), aside.display())
            })?;
        }
    }
    for dir in [&aside, data_dir] {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(aside)
}
