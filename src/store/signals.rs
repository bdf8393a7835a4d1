//! Wake-ups for long-polls: one signal per queue (a job became claimable), one per job (a
//! fragment arrived or its state changed) and one per agent (it stops, so its claim
//! should stop waiting). Waiters register before they look at the database, so a signal
//! sent between their look and their wait is not lost.
//!
//! With several servers on one database (PostgreSQL), each wake-up is also handed to a
//! relay that carries it to the others (`store/postgres/relay.rs`), which deliver it with
//! `wake_from_elsewhere`. A relayed wake-up can be lost (a server dies between its commit
//! and its notification), so there waiters also look again every `recheck`: a lost one
//! costs latency, never a job.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

type Registry = Mutex<HashMap<String, Arc<Notify>>>;

/// What a wake-up is about: the key of a waiter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Wakeup {
    /// A job became claimable in this queue.
    Queue(String),
    /// A job's log or state changed.
    Job(String),
    /// An agent stops: its claims should stop waiting.
    Agent(String),
}

/// Where wake-ups go to reach the other servers, and how often waiters look again.
struct Relay {
    outbox: mpsc::UnboundedSender<Wakeup>,
    recheck: Duration,
}

#[derive(Default)]
pub struct Signals {
    queues: Registry,
    jobs: Registry,
    agents: Registry,
    /// Cancelled when the server stops: long-polls answer at once instead of holding the
    /// shutdown up for their whole wait.
    closing: tokio_util::sync::CancellationToken,
    /// Set when other servers share the database.
    relay: OnceLock<Relay>,
    /// Tells every waiter to look again, as its recheck would (`all_look_again`).
    look_again: Notify,
}

/// How a wait ended.
pub enum Waited<T> {
    Woken(T),
    /// Time to look again, in case a wake-up from another server was lost.
    Recheck,
    /// The deadline passed, or the server is closing.
    Over,
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
        self.wake(Wakeup::Queue(queue.to_string()));
    }

    pub fn wake_job(&self, job_id: &str) {
        self.wake(Wakeup::Job(job_id.to_string()));
    }

    pub fn wake_agent(&self, agent: &str) {
        self.wake(Wakeup::Agent(agent.to_string()));
    }

    /// Wakes the waiters here, and through the relay those of the other servers.
    fn wake(&self, wakeup: Wakeup) {
        self.wake_from_elsewhere(&wakeup);
        if let Some(relay) = self.relay.get() {
            // The relay's task outlives the store; if it is gone, the server is stopping.
            let _ = relay.outbox.send(wakeup);
        }
    }

    /// Wakes the waiters here for what another server did.
    pub fn wake_from_elsewhere(&self, wakeup: &Wakeup) {
        let (registry, key) = match wakeup {
            Wakeup::Queue(queue) => (&self.queues, queue),
            Wakeup::Job(job_id) => (&self.jobs, job_id),
            Wakeup::Agent(agent) => (&self.agents, agent),
        };
        if let Some(notify) = lock(registry).get(key.as_str()) {
            notify.notify_waiters();
        }
    }

    /// Has every waiter look again now (`Waited::Recheck`): wake-ups from other servers
    /// may have been missed (the relay lost its connection).
    pub fn all_look_again(&self) {
        self.look_again.notify_waiters();
    }

    /// From now on, wake-ups also go to `outbox` for the other servers, and waiters look
    /// again every `recheck`. Set once, when the store opens.
    pub fn relay_to(&self, outbox: mpsc::UnboundedSender<Wakeup>, recheck: Duration) {
        let _ = self.relay.set(Relay { outbox, recheck });
    }

    /// Waits for `wakeup` until `deadline`, or until it is time to look again.
    pub async fn wait<T>(
        &self,
        wakeup: impl Future<Output = T>,
        deadline: tokio::time::Instant,
    ) -> Waited<T> {
        let (until, ends_at) = match self.relay.get() {
            Some(relay) if tokio::time::Instant::now() + relay.recheck < deadline => {
                (tokio::time::Instant::now() + relay.recheck, Waited::Recheck)
            }
            _ => (deadline, Waited::Over),
        };
        tokio::select! {
            woken = tokio::time::timeout_at(until, wakeup) => match woken {
                Ok(woken) => Waited::Woken(woken),
                Err(_) => ends_at,
            },
            _ = self.look_again.notified() => Waited::Recheck,
            _ = self.closing.cancelled() => Waited::Over,
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
