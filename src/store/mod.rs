//! Storage. On SQLite (the default): one file in WAL mode, with one writer thread with
//! group commit and a small pool of read connections (`sqlite/`); blobs as files
//! (`blobs`), in-process wake-ups for long-polls (`signals`) and the queues that may have
//! a job to claim (`claimable`), which `open` puts together into the `Store`. The public
//! API is domain operations, grouped by resource in the other files; nothing outside this
//! module writes SQL. `postgres/` is the PostgreSQL backend being built (so far its schema
//! and `tf migrate`'s copy). This file only names what the rest of tf uses; nothing in
//! here uses it.

mod agents;
mod backend;
pub mod backup;
pub mod blobs;
mod clients;
#[cfg(test)]
mod conformance;
mod error;
mod jobs;
mod legacy;
mod logs;
mod open;
mod operations;
mod pages;
pub mod postgres;
mod records_copy;
mod restricted;
mod retention;
mod secrets;
mod secrets_key;
mod signals;
pub(crate) mod sqlite;

pub use agents::{AgentFields, ProvisionLogEntry};
pub use blobs::{BlobKind, StoredBlob};
pub use clients::{Client, RefreshTokens, Renewal, Revocation};
pub use error::StoreError;
pub use jobs::{AttachmentGate, AttachmentReceipt, JobFilter, JobSummary, NewJob, ResultUpdate};
pub use legacy::LegacyResult;
pub use logs::{Fragment, FragmentQuery};
pub(crate) use open::lock_for_server;
pub use open::{DatabaseChoice, ServerDataDir, Store};
pub use secrets::Expiry;
pub use secrets_key::SecretsKey;
pub use sqlite::health;
pub use sqlite::SyncMode;
