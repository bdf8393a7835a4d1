//! The names of the restricted queues, kept in memory: every submission asks whether its
//! queue is restricted, and the answer changes only when a manager restricts or frees a
//! queue. On SQLite only this server can do that, and says so (`changed`); on PostgreSQL
//! another server on the same database can too, so the names are read again once they
//! are a second old: a restriction made elsewhere holds everywhere within a second.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::Result;

pub struct RestrictedNames {
    state: Mutex<Cache>,
    /// How long names read are kept; `None`: until this server changes them.
    max_age: Option<Duration>,
}

#[derive(Default)]
struct Cache {
    names: Option<(Arc<HashSet<String>>, Instant)>,
    /// Counts the changes, so a reading that started before one is not kept.
    changes: u64,
}

impl RestrictedNames {
    /// Names kept until this server changes them (the only writer of its database).
    pub fn kept() -> RestrictedNames {
        RestrictedNames::with_max_age(None)
    }

    /// Names read again once they are `max_age` old (other servers may change them).
    pub fn kept_for(max_age: Duration) -> RestrictedNames {
        RestrictedNames::with_max_age(Some(max_age))
    }

    fn with_max_age(max_age: Option<Duration>) -> RestrictedNames {
        RestrictedNames {
            state: Mutex::default(),
            max_age,
        }
    }

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
            let fresh = |read_at: &Instant| self.max_age.is_none_or(|age| read_at.elapsed() < age);
            if let Some((names, _)) = cache.names.as_ref().filter(|(_, read_at)| fresh(read_at)) {
                return Ok(names.clone());
            }
            cache.changes
        };
        let read_at = Instant::now();
        let names = Arc::new(read.await?);
        let mut cache = self.lock();
        if cache.changes == changes {
            cache.names = Some((names.clone(), read_at));
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
