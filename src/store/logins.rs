//! Failed logins per (client id, address): after `FAILURES_BEFORE_LOCKOUT` failures in a
//! row the address is locked out of that client for `LOCKOUT`, so a secret cannot be
//! guessed at speed. A lock-out holds the address that guessed, not the client id
//! everywhere, so a stranger cannot lock a real client out. Unknown ids count like known
//! ones, so the answers do not tell which ids exist.
//!
//! Every server of a lab must count together, or each replica would grant its own five
//! guesses: on PostgreSQL the counts are rows (`postgres/clients.rs`); on SQLite, where
//! one server does all the counting, they stay in its memory (`InMemoryLoginFailures`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FAILURES_BEFORE_LOCKOUT: u32 = 5;
pub const LOCKOUT: Duration = Duration::from_secs(60);

/// The most (client id, address) pairs remembered in memory; past it, pairs that are not
/// locked out are forgotten first.
const MAX_TRACKED_LOGINS: usize = 100_000;

/// Who is trying to log in as whom.
type LoginSource = (String, IpAddr);

#[derive(Default)]
pub struct InMemoryLoginFailures {
    attempts: Mutex<HashMap<LoginSource, LoginRecord>>,
}

#[derive(Default)]
struct LoginRecord {
    failures: u32,
    locked_until: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl InMemoryLoginFailures {
    /// Counts an attempt before its secret is checked, so parallel guesses count too;
    /// `Some` is how long the source stays locked out.
    pub fn count_attempt(&self, client_id: &str, address: IpAddr) -> Option<Duration> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if attempts.len() >= MAX_TRACKED_LOGINS {
            forget_the_unlocked(&mut attempts, now);
        }
        let record = attempts
            .entry((client_id.to_string(), address))
            .or_default();
        match record.locked_until {
            Some(until) if until > now => return Some(until - now),
            Some(_) => *record = LoginRecord::default(),
            None => {}
        }
        record.failures += 1;
        record.last_attempt = Some(now);
        if record.failures > FAILURES_BEFORE_LOCKOUT {
            record.failures = 0;
            record.locked_until = Some(now + LOCKOUT);
            return Some(LOCKOUT);
        }
        None
    }

    /// The source logged in: its failures are forgotten.
    pub fn forget(&self, client_id: &str, address: IpAddr) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(client_id.to_string(), address));
    }
}

/// Makes room: first the sources idle for a lock-out's length, then every one not
/// locked out (locks are what must not be lost).
fn forget_the_unlocked(attempts: &mut HashMap<LoginSource, LoginRecord>, now: Instant) {
    let locked = |record: &LoginRecord| record.locked_until.is_some_and(|until| until > now);
    attempts.retain(|_, record| {
        locked(record) || record.last_attempt.is_some_and(|at| now - at < LOCKOUT)
    });
    if attempts.len() >= MAX_TRACKED_LOGINS {
        attempts.retain(|_, record| locked(record));
    }
}
