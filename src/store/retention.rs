//! Expiry of old data, like the reference's MongoDB TTL indexes: jobs by submission
//! time, log fragments and archives by the time they were stored, agents and advertised
//! queues by their last report, wait-time samples by when they were taken.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::backend::{on_backend, Retention as _};
use super::error::Result;
use super::open::Store;
use crate::job::time::Micros;

/// A stored archive file no row points to is deleted after this grace period (an upload
/// renames its file into place just before its row commits).
const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Refresh tokens unused this long are forgotten (the reference's 90 days), whatever
/// the retention of jobs.
pub(super) const REFRESH_TOKEN_IDLE: Micros = 90 * 86_400 * 1_000_000;

/// Rows deleted per table in one write: a large expiry never holds the writer (and so
/// every claim and log post) for long.
pub(super) const BATCH: i64 = 5000;

/// What one expiry pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub jobs: usize,
    pub fragments: usize,
    pub files: usize,
    pub agents: usize,
    /// Advertised queues, wait-time samples, idle refresh tokens, expired secrets.
    pub other: usize,
}

impl Expired {
    fn is_empty(&self) -> bool {
        *self == Expired::default()
    }

    fn add(&mut self, more: Expired) {
        self.jobs += more.jobs;
        self.fragments += more.fragments;
        self.files += more.files;
        self.agents += more.agents;
        self.other += more.other;
    }
}

impl Store {
    /// Deletes everything older than `cutoff`, batch by batch, then archive files nothing
    /// points to.
    pub async fn expire(&self, cutoff: Micros) -> Result<Expired> {
        let mut total = Expired::default();
        loop {
            let (batch, dropped_files) = on_backend!(self, db => db.expire_batch(cutoff).await)?;
            for file_name in &dropped_files {
                self.blobs.remove(Some(file_name));
            }
            if batch.is_empty() {
                break;
            }
            total.add(batch);
        }
        total.files += self.remove_orphan_files().await?;
        Ok(total)
    }

    /// Every archive file a row points to, by name.
    pub async fn referenced_archives(&self) -> Result<Vec<String>> {
        let names = on_backend!(self, db => db.referenced_files().await)?;
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        Ok(names)
    }

    /// Deletes archive files no row points to, only where that absence is certain: the
    /// blob directory belongs to this database (see `BlobDir::open_for_server`), and the
    /// file is older than an upload's rename-then-commit.
    async fn remove_orphan_files(&self) -> Result<usize> {
        if !self.blobs.sweepable() {
            return Ok(0);
        }
        let referenced: HashSet<String> = on_backend!(self, db => db.referenced_files().await)?;
        let now = SystemTime::now();
        let mut removed = 0;
        for (name, modified) in self.blobs.archives()? {
            let old_enough = now.duration_since(modified).unwrap_or_default() > ORPHAN_GRACE;
            if old_enough && !referenced.contains(&name) {
                self.blobs.remove(Some(&name));
                removed += 1;
            }
        }
        Ok(removed)
    }
}
