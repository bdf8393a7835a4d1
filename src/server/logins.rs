//! bcrypt, slow on purpose, runs a few at a time off the async workers, shared by every
//! request in `App`. (Repeated failed logins lock their source out: `store/logins.rs`.)

use std::sync::LazyLock;

use axum::http::StatusCode;

use super::reply::ApiError;

/// The reference's bcrypt cost for client secrets.
pub const BCRYPT_COST: u32 = 8;

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
