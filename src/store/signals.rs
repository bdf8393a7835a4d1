//! In-process wake-ups for long-polls: one signal per queue (a job became claimable), one
//! per job (a fragment arrived or its state changed) and one per agent (it stops, so its
//! claim should stop waiting). Waiters register before they look at the database, so a
//! signal sent between their look and their wait is not lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Registry = Mutex<HashMap<String, Arc<Notify>>>;

#[derive(Default)]
pub struct Signals {
    queues: Registry,
    jobs: Registry,
    agents: Registry,
    /// Cancelled when the server stops: long-polls answer at once instead of holding the
    /// shutdown up for their whole wait.
    closing: tokio_util::sync::CancellationToken,
}

/// A waiter's hold on one signal; dropping it forgets the key once nobody else waits.
pub struct Subscription<'a> {
    registry: &'a Registry,
    key: String,
    pub notify: Arc<Notify>,
}

impl Signals {
    pub fn queue(&self, queue: &str) -> Subscription<'_> {
        subscribe(&self.queues, queue)
    }

    pub fn job(&self, job_id: &str) -> Subscription<'_> {
        subscribe(&self.jobs, job_id)
    }

    pub fn agent(&self, agent: &str) -> Subscription<'_> {
        subscribe(&self.agents, agent)
    }

    pub fn wake_queue(&self, queue: &str) {
        wake(&self.queues, queue);
    }

    pub fn wake_job(&self, job_id: &str) {
        wake(&self.jobs, job_id);
    }

    pub fn wake_agent(&self, agent: &str) {
        wake(&self.agents, agent);
    }

    /// Waits for `wakeup` until `deadline`; `None` when the deadline passed or the server
    /// is closing.
    pub async fn wait<T>(
        &self,
        wakeup: impl Future<Output = T>,
        deadline: tokio::time::Instant,
    ) -> Option<T> {
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, wakeup) => woken.ok(),
            _ = self.closing.cancelled() => None,
        }
    }

    pub fn close(&self) {
        self.closing.cancel();
    }
}

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
    registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn subscribe<'a>(registry: &'a Registry, key: &str) -> Subscription<'a> {
    let notify = lock(registry).entry(key.to_string()).or_default().clone();
    Subscription {
        registry,
        key: key.to_string(),
        notify,
    }
}

fn wake(registry: &Registry, key: &str) {
    if let Some(notify) = lock(registry).get(key) {
        notify.notify_waiters();
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut map = lock(self.registry);
        // Two holders left means the map and this subscription: nobody else waits.
        if map
            .get(&self.key)
            .is_some_and(|n| Arc::strong_count(n) == 2)
        {
            map.remove(&self.key);
        }
    }
}
