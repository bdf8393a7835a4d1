//! Online backups: a consistent copy of a data dir, taken while the server runs.
//!
//! The database is copied with `VACUUM INTO`, which reads one snapshot: every write
//! acknowledged before the backup began is in it, and no half of a later one. Then the
//! archives that snapshot points to are copied. Archives are never changed in place (a
//! new upload gets a new file), so a copy is exact; one deleted in between (its job
//! expired or its artifact replaced) loses its row in the copy too, and is reported.
//! The result is itself a data dir: restoring is starting `tf serve` on it.

use std::path::Path;

use anyhow::{bail, Context};
use rusqlite::{Connection, OpenFlags};

use super::health::{self, DatabaseState, KEY_FILES};
use crate::private_file;

pub struct BackupReport {
    pub jobs: u64,
    pub archives: u64,
    pub archive_bytes: u64,
    /// Archives deleted by the server between the snapshot and their copy.
    pub vanished: Vec<String>,
    pub key_files: Vec<String>,
}

/// Copies the data dir `source` into the new directory `destination`. The copy is made
/// in `<destination>.partial` and renamed into place when complete, so a backup that
/// failed halfway never looks like a good data dir.
pub fn backup(source: &Path, destination: &Path) -> anyhow::Result<BackupReport> {
    let database = source.join(health::DATABASE_FILE);
    let state = health::inspect(&database, health::Check::Readable);
    if state != DatabaseState::Healthy {
        bail!("{}: there is nothing to back up", state.describe(&database));
    }
    check_empty_or_missing(destination)?;
    let mut partial = destination.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    if partial.exists() {
        bail!(
            "{} is left from a backup that did not finish; delete it first",
            partial.display()
        );
    }
    let report = copy_data_dir(source, &partial)?;
    // Replaces an empty destination directory, as rename(2) allows.
    std::fs::rename(&partial, destination).with_context(|| {
        format!(
            "cannot move the finished backup {} to {}",
            partial.display(),
            destination.display()
        )
    })?;
    if let Some(parent) = destination.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(report)
}

fn copy_data_dir(source: &Path, destination: &Path) -> anyhow::Result<BackupReport> {
    // Private, like the data dir: the copy holds secrets and their key.
    private_file::create_dir(destination)?;
    let copy = destination.join("tf.db");
    snapshot(&source.join("tf.db"), &copy)?;

    let db = Connection::open(&copy)
        .with_context(|| format!("cannot open the copy {}", copy.display()))?;
    let jobs: u64 = db.query_row("SELECT COUNT(*) FROM jobs", [], |row| row.get(0))?;
    let blobs_dir = destination.join("blobs");
    std::fs::create_dir(&blobs_dir)
        .with_context(|| format!("cannot create {}", blobs_dir.display()))?;
    let mut report = BackupReport {
        jobs,
        archives: 0,
        archive_bytes: 0,
        vanished: Vec::new(),
        key_files: Vec::new(),
    };
    for file_name in referenced_archives(&db)? {
        let from = source.join("blobs").join(&file_name);
        let to = blobs_dir.join(&file_name);
        match copy_durably(&from, &to) {
            Ok(bytes) => {
                report.archives += 1;
                report.archive_bytes += bytes;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                db.execute("DELETE FROM blobs WHERE file_name = ?1", [&file_name])?;
                report.vanished.push(file_name);
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot copy {}", from.display()))
            }
        }
    }
    drop(db);
    for key in KEY_FILES {
        let from = source.join(key);
        if from.is_file() {
            copy_durably(&from, &destination.join(key))
                .with_context(|| format!("cannot copy {}", from.display()))?;
            report.key_files.push(key.to_string());
        }
    }
    sync_dir(&blobs_dir)?;
    sync_dir(destination)?;
    Ok(report)
}

/// A backup never mixes with older files: its destination is new or an empty directory.
fn check_empty_or_missing(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        let mut entries =
            std::fs::read_dir(path).with_context(|| format!("cannot read {}", path.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; back up into a new directory",
                path.display()
            );
        }
    }
    Ok(())
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

fn referenced_archives(db: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut query = db.prepare("SELECT file_name FROM blobs")?;
    let names = query.query_map([], |row| row.get(0))?;
    names.collect()
}

/// Copies a file and fsyncs the copy; the number of bytes copied.
fn copy_durably(from: &Path, to: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()?;
    Ok(bytes)
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}
