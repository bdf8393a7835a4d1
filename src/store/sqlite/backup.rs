//! The SQLite side of a backup (see `store/backup.rs`): one consistent copy of the live
//! database, checked before it is trusted, whose rows of archives that vanished before
//! they were copied are deleted.

use std::path::Path;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};

use super::health::{self, DatabaseState};
use crate::store::records_copy::RecordsCopy;

/// The copy of the database of `source`, in the backup directory `destination`.
pub struct SqliteCopy(Connection);

/// Copies the database of the data dir `source` into `destination`.
pub fn snapshot_sqlite(source: &Path, destination: &Path) -> anyhow::Result<SqliteCopy> {
    let database = source.join(health::DATABASE_FILE);
    let state = health::inspect(&database, health::Check::Readable);
    if state != DatabaseState::Healthy {
        bail!("{}: there is nothing to back up", state.describe(&database));
    }
    let copy = destination.join(health::DATABASE_FILE);
    snapshot(&database, &copy)?;
    let db = Connection::open(&copy)
        .with_context(|| format!("cannot open the copy {}", copy.display()))?;
    Ok(SqliteCopy(db))
}

impl RecordsCopy for SqliteCopy {
    fn jobs(&self) -> Option<u64> {
        self.0
            .query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0))
            .ok()
    }

    fn archives(&self) -> anyhow::Result<Vec<String>> {
        let mut query = self.0.prepare("SELECT file_name FROM blobs")?;
        let names = query.query_map([], |row| row.get(0))?;
        Ok(names.collect::<rusqlite::Result<_>>()?)
    }

    fn forget(&self, file_name: &str) -> anyhow::Result<()> {
        self.0
            .execute("DELETE FROM blobs WHERE file_name = ?1", [file_name])?;
        Ok(())
    }
}

/// One consistent copy of the live database, checked before it is trusted.
fn snapshot(database: &Path, copy: &Path) -> anyhow::Result<()> {
    // Read-write because a WAL reader must be able to update the shared-memory index;
    // no row of the live database is written.
    let live = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", database.display()))?;
    live.busy_timeout(std::time::Duration::from_secs(30))?;
    let target = copy
        .to_str()
        .context("the backup path must be valid UTF-8")?;
    live.execute("VACUUM INTO ?1", [target])
        .with_context(|| format!("cannot copy the database into {}", copy.display()))?;
    let verdict: String =
        Connection::open(copy)?.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if verdict != "ok" {
        bail!("the copied database failed its check: {verdict}");
    }
    // Client secret hashes and job data: readable by the server's user only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(copy, std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(copy)?.sync_all()?;
    Ok(())
}
