//! What keeps logins safe to offer: repeated failed logins for one client id lock it out
//! for a while (so its secret cannot be guessed at speed), and bcrypt, slow on purpose,
//! runs a few at a time off the async workers. Both are shared by every request, in `App`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::reply::ApiError;

/// The reference's bcrypt cost for client secrets.
pub const BCRYPT_COST: u32 = 8;
const FAILURES_BEFORE_LOCKOUT: u32 = 5;
const LOCKOUT: Duration = Duration::from_secs(60);
/// The most (client id, address) pairs remembered; past it, pairs that are not locked
/// out are forgotten first.
const MAX_TRACKED_LOGINS: usize = 100_000;

/// Who is trying to log in as whom: a lock-out holds the address that guessed, not the
/// client id everywhere, so a stranger cannot lock a real client out.
type LoginSource = (String, IpAddr);

/// Failed login attempts per (client id, address), known ids and unknown ones alike, so
/// that the answers do not tell which ids exist.
#[derive(Default)]
pub struct LoginGuard {
    attempts: Mutex<HashMap<LoginSource, LoginRecord>>,
}

#[derive(Default)]
struct LoginRecord {
    failures: u32,
    locked_until: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl LoginGuard {
    /// Counts an attempt before its secret is checked, so parallel guesses count too;
    /// `Err` is how long the source stays locked.
    pub fn attempt(&self, client_id: &str, address: IpAddr) -> Result<(), Duration> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if attempts.len() >= MAX_TRACKED_LOGINS {
            forget_the_unlocked(&mut attempts, now);
        }
        let record = attempts
            .entry((client_id.to_string(), address))
            .or_default();
        match record.locked_until {
            Some(until) if until > now => return Err(until - now),
            Some(_) => *record = LoginRecord::default(),
            None => {}
        }
        record.failures += 1;
        record.last_attempt = Some(now);
        if record.failures > FAILURES_BEFORE_LOCKOUT {
            record.failures = 0;
            record.locked_until = Some(now + LOCKOUT);
            return Err(LOCKOUT);
        }
        Ok(())
    }

    pub fn succeeded(&self, client_id: &str, address: IpAddr) {
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

/// bcrypt, slow on purpose, runs off the async workers and at most one per core at a
/// time: a flood of logins waits its turn instead of taking every thread.
pub struct Bcrypt {
    slots: tokio::sync::Semaphore,
}

impl Default for Bcrypt {
    fn default() -> Bcrypt {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Bcrypt {
            slots: tokio::sync::Semaphore::new(cores),
        }
    }
}

impl Bcrypt {
    /// Whether `secret` matches `hash`; a missing hash is checked against a dummy one, so
    /// unknown clients cost as much as known ones.
    pub async fn verify(&self, secret: String, hash: Option<String>) -> bool {
        self.run(move || {
            let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
            bcrypt::verify(secret, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    /// The hash of a new secret, at the reference's cost.
    pub async fn hash(&self, secret: String) -> Result<String, ApiError> {
        self.run(move || bcrypt::hash(secret, BCRYPT_COST).ok())
            .await
            .flatten()
            .ok_or_else(|| {
                ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, "Cannot hash the secret")
            })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let _slot = self.slots.acquire().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }
}

/// A bcrypt hash to check against for unknown clients, so that both answers take as long.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| bcrypt::hash("no such client", BCRYPT_COST).unwrap_or_default());
