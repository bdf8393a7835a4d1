//! Online backups: a consistent copy of a data dir, taken while the server runs.
//!
//! The records are copied first, in one snapshot (on SQLite, `VACUUM INTO`: every write
//! acknowledged before the backup began is in it, and no half of a later one); then the
//! archives that snapshot points to. Archives are never changed in place (a new upload
//! gets a new file), so a copy is exact; one deleted in between (its job expired or its
//! artifact replaced) is reported, and on SQLite loses its row in the copy too. The
//! result is itself a data dir: restoring is starting `tf serve` on it.
//!
//! On PostgreSQL the records stay in the database, which `pg_dump` backs up; the
//! backup then holds the archives the database points to and the keys.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::open::{DatabaseChoice, Store};
use super::records_copy::RecordsCopy;
use super::sqlite::backup::snapshot_sqlite;
use super::sqlite::health::KEY_FILES;
use crate::private_file;

pub struct BackupReport {
    /// Jobs in the copied records; `None` when the records stay in PostgreSQL.
    pub jobs: Option<u64>,
    pub archives: u64,
    pub archive_bytes: u64,
    /// Archives the records point to that were gone when they were to be copied: deleted
    /// by the server meanwhile, or (on PostgreSQL) missing from the data dir.
    pub vanished: Vec<String>,
    pub key_files: Vec<String>,
}

/// Copies the data dir `source` (with its records, wherever `database` keeps them) into
/// the new directory `destination`. The copy is made in `<destination>.partial` and
/// renamed into place when complete, so a backup that failed halfway never looks like a
/// good data dir.
pub async fn backup(
    source: &Path,
    destination: &Path,
    database: DatabaseChoice,
) -> anyhow::Result<BackupReport> {
    check_empty_or_missing(destination)?;
    let mut partial = destination.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        bail!(
            "{} is left from a backup that did not finish; delete it first",
            partial.display()
        );
    }
    // Private, like the data dir: the copy holds secrets and their key.
    private_file::create_dir(&partial)?;
    let report = match database {
        DatabaseChoice::Sqlite(_) => {
            copy_files(source, &partial, &snapshot_sqlite(source, &partial)?)?
        }
        DatabaseChoice::Postgres(database) => {
            let store =
                Store::open_beside_server(source, DatabaseChoice::Postgres(database)).await?;
            let archives = store.referenced_archives().await?;
            copy_files(source, &partial, &archives)?
        }
    };
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

impl RecordsCopy for Vec<String> {
    fn jobs(&self) -> Option<u64> {
        None
    }

    fn archives(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.clone())
    }

    fn forget(&self, _: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Copies the archives the records point to, then the key files.
fn copy_files(
    source: &Path,
    destination: &Path,
    records: &dyn RecordsCopy,
) -> anyhow::Result<BackupReport> {
    let blobs_dir = destination.join("blobs");
    std::fs::create_dir(&blobs_dir)
        .with_context(|| format!("cannot create {}", blobs_dir.display()))?;
    let mut report = BackupReport {
        jobs: records.jobs(),
        archives: 0,
        archive_bytes: 0,
        vanished: Vec::new(),
        key_files: Vec::new(),
    };
    for file_name in records.archives()? {
        let from = source.join("blobs").join(&file_name);
        let to = blobs_dir.join(&file_name);
        match copy_durably(&from, &to) {
            Ok(bytes) => {
                report.archives += 1;
                report.archive_bytes += bytes;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                records.forget(&file_name)?;
                report.vanished.push(file_name);
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot copy {}", from.display()))
            }
        }
    }
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
