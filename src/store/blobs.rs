//! Artifact and attachment archives as files under `<data-dir>/blobs/`. An upload is
//! streamed to a temporary file, fsynced and renamed to a fresh name before the row that
//! points to it commits, so a crash leaves either the old archive or the new one, and
//! never a half-written file behind a row.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::data_dir::DataDirUse;
use super::error::{Result, StoreError};
use super::retention::ORPHAN_GRACE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// The archive a client uploads for the agent (`<job>.attachments`).
    Attachments,
    /// The archive an agent uploads with a job's artifacts (`<job>.artifact`).
    Artifact,
}

impl BlobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobKind::Attachments => "attachments",
            BlobKind::Artifact => "artifact",
        }
    }
}

/// A file that is complete on disk and waits for its row.
pub struct StoredBlob {
    pub file_name: String,
    pub size: u64,
}

pub struct BlobDir {
    root: PathBuf,
    incoming: PathBuf,
    /// Whether the orphan sweep may delete files here (see `open_for_server`).
    sweepable: bool,
}

/// Deletes the files in `incoming` nobody wrote to for `ORPHAN_GRACE`: an upload in
/// progress writes to its file as its bytes arrive.
fn remove_cut_off_uploads(incoming: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(incoming) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        entries => entries?,
    };
    let now = std::time::SystemTime::now();
    for entry in entries {
        let entry = entry?;
        let modified = entry.metadata()?.modified()?;
        if now.duration_since(modified).unwrap_or_default() > ORPHAN_GRACE {
            match std::fs::remove_file(entry.path()) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The file in the directory that names the database whose rows point into it.
const OWNER_FILE: &str = ".store-id";

/// Why an upload could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the upload is larger than {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An upload in progress. Unless `finish` moved it into place, dropping it deletes its
/// temporary file.
pub struct BlobUpload {
    file: Option<tokio::fs::File>,
    moved_into_place: bool,
    temp_path: PathBuf,
    final_dir: PathBuf,
    size: u64,
    limit: u64,
}

impl BlobDir {
    /// For the server, which owns the uploads: what is left in `incoming` is from uploads
    /// cut off by a crash, and is deleted: all of it when the server is alone on the data
    /// dir, and only what nobody wrote to for `ORPHAN_GRACE` when other servers share it
    /// (their uploads in progress are there too). The orphan sweep may run only if the
    /// directory belongs to the database `store_id` (see `claim`).
    pub fn open_for_server(
        root: &Path,
        store_id: &str,
        database_has_archives: bool,
        data_dir_use: DataDirUse,
    ) -> std::io::Result<BlobDir> {
        let incoming = root.join("incoming");
        match data_dir_use {
            DataDirUse::Alone if incoming.exists() => std::fs::remove_dir_all(&incoming)?,
            DataDirUse::Alone => {}
            DataDirUse::Shared => remove_cut_off_uploads(&incoming)?,
        }
        let mut dir = BlobDir::open_beside_server(root)?;
        dir.sweepable = dir.claim(store_id, database_has_archives)?;
        Ok(dir)
    }

    /// For a tool beside the server: uploads in progress are left alone, nothing is swept.
    pub fn open_beside_server(root: &Path) -> std::io::Result<BlobDir> {
        let incoming = root.join("incoming");
        std::fs::create_dir_all(&incoming)?;
        Ok(BlobDir {
            root: root.to_path_buf(),
            incoming,
            sweepable: false,
        })
    }

    /// Whether the directory belongs to the database `store_id`: it names it in its owner
    /// file. A directory without one (new, or written before tf had it) is claimed unless
    /// it holds archives while the database knows of none: a database that never stored an
    /// archive is not the one these came from.
    fn claim(&self, store_id: &str, database_has_archives: bool) -> std::io::Result<bool> {
        let owner_file = self.root.join(OWNER_FILE);
        match std::fs::read_to_string(&owner_file) {
            Ok(owner) if owner.trim() == store_id => return Ok(true),
            Ok(owner) => {
                tracing::warn!(
                    "{} was written for another database ({}): stored archives nothing points to are kept",
                    self.root.display(),
                    owner.trim()
                );
                return Ok(false);
            }
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            Err(_) => {}
        }
        if !database_has_archives && archive_count(&self.root)? > 0 {
            tracing::warn!(
                "{} holds archives the database has no record of: they are kept",
                self.root.display()
            );
            return Ok(false);
        }
        let mut file = std::fs::File::create(&owner_file)?;
        std::io::Write::write_all(&mut file, format!("{store_id}\n").as_bytes())?;
        file.sync_all()?;
        Ok(true)
    }

    /// Whether the orphan sweep may delete files here.
    /// Starts receiving an archive of at most `limit` bytes.
    pub async fn start_upload(&self, limit: u64) -> Result<BlobUpload> {
        let temp_path = self.incoming.join(uuid::Uuid::new_v4().to_string());
        let file = tokio::fs::File::create(&temp_path).await?;
        Ok(BlobUpload {
            file: Some(file),
            moved_into_place: false,
            temp_path,
            final_dir: self.root.clone(),
            size: 0,
            limit,
        })
    }

    pub fn sweepable(&self) -> bool {
        self.sweepable
    }

    pub fn path(&self, file_name: &str) -> PathBuf {
        self.root.join(file_name)
    }

    /// Deletes a file that no row points to any more.
    pub fn remove(&self, file_name: Option<&str>) {
        if let Some(file_name) = file_name {
            if let Err(error) = std::fs::remove_file(self.path(file_name)) {
                tracing::warn!("cannot delete blob {file_name}: {error}");
            }
        }
    }

    /// Deletes `blob`'s file when the write that should point to it failed.
    pub fn discard_on_error<T>(&self, blob: &str, outcome: Result<T>) -> Result<T> {
        if outcome.is_err() {
            self.remove(Some(blob));
        }
        outcome
    }

    /// Whether two stored files hold the same bytes (`false` when either is unreadable).
    pub async fn same_content(&self, a: &str, b: &str) -> bool {
        let (a, b) = (self.path(a), self.path(b));
        tokio::task::spawn_blocking(move || files_are_equal(&a, &b).unwrap_or(false))
            .await
            .unwrap_or(false)
    }

    /// The archive files in the directory and when each was last written, for the orphan
    /// sweep.
    pub fn archives(&self) -> std::io::Result<Vec<(String, std::time::SystemTime)>> {
        let mut names = Vec::new();
        for entry in archive_entries(&self.root)? {
            let modified = entry.metadata()?.modified()?;
            names.push((entry.file_name().to_string_lossy().into_owned(), modified));
        }
        Ok(names)
    }
}

/// How many archive files the blob directory `root` holds (none if it does not exist).
pub fn archive_count(root: &Path) -> std::io::Result<usize> {
    match archive_entries(root) {
        Ok(entries) => Ok(entries.len()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error),
    }
}

/// The archive files of `root`: its plain files but the owner file (uploads in progress
/// are in a subdirectory).
fn archive_entries(root: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    let mut archives = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != OWNER_FILE {
            archives.push(entry);
        }
    }
    Ok(archives)
}

impl BlobUpload {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(UploadError::TooLarge(self.limit));
        }
        let file = self.file.as_mut().ok_or(StoreError::Closed)?;
        file.write_all(chunk).await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Makes the file durable under its final name.
    pub async fn finish(mut self) -> Result<StoredBlob> {
        let mut file = self.file.take().ok_or(StoreError::Closed)?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let file_name = uuid::Uuid::new_v4().to_string();
        tokio::fs::rename(&self.temp_path, self.final_dir.join(&file_name)).await?;
        self.moved_into_place = true;
        // The rename itself must survive a crash too.
        tokio::fs::File::open(&self.final_dir)
            .await?
            .sync_all()
            .await?;
        Ok(StoredBlob {
            file_name,
            size: self.size,
        })
    }
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        if !self.moved_into_place {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// Compares two files chunk by chunk, without reading either whole into memory.
fn files_are_equal(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut left, mut right) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let read = a.read(&mut left)?;
        if read == 0 {
            return Ok(true);
        }
        b.read_exact(&mut right[..read])?;
        if left[..read] != right[..read] {
            return Ok(false);
        }
    }
}
