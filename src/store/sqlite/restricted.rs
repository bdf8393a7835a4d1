//! The names of the restricted queues, kept in memory: every submission asks whether its
//! queue is restricted, and the answer changes only when a manager restricts or frees a
//! queue through this server.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::store::error::Result;

#[derive(Default)]
pub struct RestrictedNames {
    state: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    names: Option<Arc<HashSet<String>>>,
    /// Counts the changes, so a reading that started before one is not kept.
    changes: u64,
}

impl RestrictedNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The names, read with `read` when not known.
    pub async fn get(
        &self,
        read: impl Future<Output = Result<HashSet<String>>>,
    ) -> Result<Arc<HashSet<String>>> {
        let changes = {
            let cache = self.lock();
            if let Some(names) = &cache.names {
                return Ok(names.clone());
            }
            cache.changes
        };
        let names = Arc::new(read.await?);
        let mut cache = self.lock();
        if cache.changes == changes {
            cache.names = Some(names.clone());
        }
        Ok(names)
    }

    /// A queue was restricted or freed (called on the writer thread once the change has
    /// committed: a reading that began before the commit is then not kept).
    pub fn changed(&self) {
        let mut cache = self.lock();
        cache.names = None;
        cache.changes += 1;
    }
}
