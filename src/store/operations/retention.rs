//! Expiry of old data, batch by batch, and of archive files nothing points to.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::job::time::Micros;
use crate::store::backend::{Reachability as _, Retention as _};
use crate::store::error::Result;
use crate::store::open::{on_backend, Store};
use crate::store::retention::{Expired, ORPHAN_GRACE};

impl Store {
    /// Deletes everything older than `cutoff`, batch by batch, then archive files nothing
    /// points to; nothing when another server on the same database is expiring now.
    pub async fn expire(&self, cutoff: Micros) -> Result<Expired> {
        let mut total = Expired::default();
        loop {
            let turn = on_backend!(self, db => db.expire_batch(cutoff).await)?;
            let Some((batch, dropped_files)) = turn else {
                tracing::info!("another server is expiring old data; this one leaves it to it");
                return Ok(total);
            };
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

    /// Whether the database can be reached and read now (`GET /healthz`).
    pub async fn database_answers(&self) -> Result<()> {
        on_backend!(self, db => db.answer().await)
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
