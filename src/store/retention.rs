//! Expiry of old data, like the reference's MongoDB TTL indexes: jobs by submission
//! time, log fragments and archives by the time they were stored, agents and advertised
//! queues by their last report, wait-time samples by when they were taken.

use std::time::Duration;

use crate::job::time::Micros;

/// A stored archive file no row points to is deleted after this grace period (an upload
/// renames its file into place just before its row commits).
pub(super) const ORPHAN_GRACE: Duration = Duration::from_secs(600);

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
    pub(super) fn is_empty(&self) -> bool {
        *self == Expired::default()
    }

    pub(super) fn add(&mut self, more: Expired) {
        self.jobs += more.jobs;
        self.fragments += more.fragments;
        self.files += more.files;
        self.agents += more.agents;
        self.other += more.other;
    }
}
