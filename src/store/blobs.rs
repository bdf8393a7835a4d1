//! Artifact and attachment archives as files under `<data-dir>/blobs/`. An upload is
//! streamed to a temporary file, fsynced and renamed to a fresh name before the row that
//! points to it commits, so a crash leaves either the old archive or the new one, and
//! never a half-written file behind a row.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::{Result, Store, StoreError};

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
}

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
    /// With `owns_uploads` (the server starting), anything left in `incoming` is from
    /// uploads cut off by a crash, and is deleted.
    pub fn open(root: &Path, owns_uploads: bool) -> std::io::Result<BlobDir> {
        let incoming = root.join("incoming");
        if owns_uploads && incoming.exists() {
            std::fs::remove_dir_all(&incoming)?;
        }
        std::fs::create_dir_all(&incoming)?;
        Ok(BlobDir {
            root: root.to_path_buf(),
            incoming,
        })
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

    /// The file names in the directory, for the orphan sweep.
    pub fn file_names(&self) -> std::io::Result<Vec<(String, std::time::SystemTime)>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let modified = entry.metadata()?.modified()?;
                names.push((entry.file_name().to_string_lossy().into_owned(), modified));
            }
        }
        Ok(names)
    }
}

impl Store {
    /// Starts receiving an archive of at most `limit` bytes.
    pub async fn start_upload(&self, limit: u64) -> Result<BlobUpload> {
        let temp_path = self.blobs.incoming.join(uuid::Uuid::new_v4().to_string());
        let file = tokio::fs::File::create(&temp_path).await?;
        Ok(BlobUpload {
            file: Some(file),
            moved_into_place: false,
            temp_path,
            final_dir: self.blobs.root.clone(),
            size: 0,
            limit,
        })
    }

    /// The file holding a job's archive of `kind`, if one was stored.
    pub async fn blob_path(&self, job_id: &str, kind: BlobKind) -> Result<Option<PathBuf>> {
        Ok(self
            .blob_row(job_id, kind)
            .await?
            .map(|name| self.blobs.path(&name)))
    }
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
