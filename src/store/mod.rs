//! Storage. The `Store` (`open`) is the front door: the rest of tf calls its domain
//! operations (`operations/`, by resource), and nothing outside this module writes SQL.
//! The records live in one of two backends behind the seam of `backend`: SQLite in the
//! data dir (`sqlite/`, the default: one file, a writer thread with group commit, a read
//! pool) or a PostgreSQL database (`postgres/`: a pool, dispatch workers and the
//! claimable jobs in memory). The domain types are in the files named after each
//! resource; archives are files (`blobs`), long-polls wait on in-process wake-ups
//! (`signals`). This file only names what the rest of tf uses; nothing in here uses it.

mod agents;
mod backend;
pub mod backup;
pub mod blobs;
mod claimable;
mod clients;
#[cfg(test)]
mod conformance;
mod data_dir;
mod error;
mod jobs;
mod legacy;
mod logins;
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
pub(crate) use data_dir::DataDirUse;
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
