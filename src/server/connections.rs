//! The open connections, for the limits on them. Each connection is busy (a request in
//! flight, a long-poll included, until its answer is sent) or idle (waiting for a
//! request's headers). One idle for too long is closed; when a new connection would go
//! over the cap, the one idle the longest is closed to make room. Busy ones are never
//! closed for either, and when every connection is busy a new one is refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

/// The default cap never goes above this: each connection costs buffers as well as a
/// file descriptor.
const MAX_DEFAULT_CAP: u64 = 10_000;

/// How often the same warning about too many connections is logged at most.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

pub struct Connections {
    cap: usize,
    table: Mutex<Table>,
    /// How many connections are open, for waiting until all are closed.
    open: watch::Sender<usize>,
    /// The time every connection's idle clock counts from.
    epoch: Instant,
    cap_warnings: Throttle,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    connections: HashMap<u64, Arc<Connection>>,
    /// How many of them were asked to close (they hold their place until they have).
    closing: usize,
}

impl Table {
    fn request_close(&mut self, connection: &Connection) {
        if !connection.closing.swap(true, Ordering::Relaxed) {
            self.closing += 1;
        }
        // A stored permit: the task sees it even if it is not waiting yet.
        connection.close.notify_one();
    }

    /// Closes the connection idle the longest, if any.
    fn close_longest_idle(&mut self) -> bool {
        let longest_idle = self
            .connections
            .values()
            .filter(|c| c.is_idle() && !c.closing.load(Ordering::Relaxed))
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
            .cloned();
        match longest_idle {
            Some(connection) => {
                self.request_close(&connection);
                true
            }
            None => false,
        }
    }
}

/// One connection's state, shared by its task and its requests.
pub struct Connection {
    epoch: Instant,
    requests_in_flight: AtomicUsize,
    /// Milliseconds from the epoch to when the connection last became idle.
    idle_since: AtomicU64,
    has_served: AtomicBool,
    closing: AtomicBool,
    close: Notify,
}

/// A connection's place in the table, given back when its task ends.
pub struct Place {
    connections: Arc<Connections>,
    id: u64,
    pub connection: Arc<Connection>,
}

/// Marks a connection busy while a request is handled and its answer is sent.
pub struct RequestInFlight {
    connection: Arc<Connection>,
}

impl Connections {
    pub fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap,
            table: Mutex::default(),
            open: watch::Sender::new(0),
            epoch: Instant::now(),
            cap_warnings: Throttle::new(),
        })
    }

    /// A place for a new connection, after closing the longest-idle one if the cap is
    /// reached; `None` when every place is taken by a request in flight.
    pub fn admit(self: &Arc<Self>) -> Option<Place> {
        let mut table = self.lock();
        let staying = table.connections.len() - table.closing;
        if staying >= self.cap {
            let made_room = table.close_longest_idle();
            if self.cap_warnings.allow() {
                let action = if made_room {
                    "closing the longest-idle ones for new ones"
                } else {
                    "all are handling requests, refusing new ones"
                };
                tracing::warn!("{} connections open (max_connections): {action}", self.cap);
            }
            if !made_room {
                return None;
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let connection = Arc::new(Connection {
            epoch: self.epoch,
            requests_in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(millis_since(self.epoch)),
            has_served: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        table.connections.insert(id, connection.clone());
        self.open.send_replace(table.connections.len());
        Some(Place {
            connections: self.clone(),
            id,
            connection,
        })
    }

    /// Closes the connection idle the longest, if any, to free its file descriptor.
    pub fn close_longest_idle(&self) {
        self.lock().close_longest_idle();
    }

    /// Closes every connection idle for longer than `limit`: waiting for a request's
    /// headers (a silent or slow client) counts as idle, an answer in the making does not.
    pub fn close_idle_longer_than(&self, limit: Duration) {
        let Some(cutoff) = millis_since(self.epoch).checked_sub(limit.as_millis() as u64) else {
            return;
        };
        let mut table = self.lock();
        let expired: Vec<_> = table
            .connections
            .values()
            .filter(|c| c.is_idle() && c.idle_since.load(Ordering::Relaxed) < cutoff)
            .cloned()
            .collect();
        for connection in expired {
            table.request_close(&connection);
        }
    }

    /// Asks every connection to close once its request in flight is answered.
    pub fn close_all(&self) {
        let mut table = self.lock();
        let all: Vec<_> = table.connections.values().cloned().collect();
        for connection in all {
            table.request_close(&connection);
        }
    }

    pub async fn all_closed(&self) {
        let _ = self.open.subscribe().wait_for(|open| *open == 0).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while holding it.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Connection {
    fn is_idle(&self) -> bool {
        self.requests_in_flight.load(Ordering::Relaxed) == 0
    }

    /// Completes when the connection should close.
    pub async fn close_requested(&self) {
        self.close.notified().await
    }

    /// Whether the connection never started a request: closing it loses nothing.
    pub fn never_served(&self) -> bool {
        !self.has_served.load(Ordering::Relaxed)
    }

    pub fn request_started(self: &Arc<Self>) -> RequestInFlight {
        self.has_served.store(true, Ordering::Relaxed);
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        RequestInFlight {
            connection: self.clone(),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        table.connections.remove(&self.id);
        if self.connection.closing.load(Ordering::Relaxed) {
            table.closing -= 1;
        }
        self.connections.open.send_replace(table.connections.len());
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let connection = &self.connection;
        connection
            .idle_since
            .store(millis_since(connection.epoch), Ordering::Relaxed);
        connection
            .requests_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lets a warning through at most once per `WARNING_INTERVAL`, so a flood of
/// connections does not become a flood of log lines.
pub struct Throttle {
    started: Instant,
    /// Seconds from `started` to the last warning let through, plus one (0: none yet).
    last: AtomicU64,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn allow(&self) -> bool {
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now >= last + WARNING_INTERVAL.as_secs();
        due && self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// Raises the soft limit on open files to the hard one (every connection is a file) and
/// returns the limit in effect.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            } else {
                tracing::warn!(
                    "cannot raise the open-file limit from {} to {}: {}",
                    limit.rlim_cur,
                    limit.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    limit.rlim_cur
}

/// The cap when none is configured: three quarters of the open-file limit (the rest is
/// for the database, archives being sent or received, and webhooks), at most 10,000.
pub fn default_cap(open_file_limit: u64) -> usize {
    let cap = (open_file_limit / 4 * 3).clamp(1, MAX_DEFAULT_CAP);
    usize::try_from(cap).unwrap_or(1)
}
