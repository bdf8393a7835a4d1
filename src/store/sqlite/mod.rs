//! The SQLite backend's machinery: the database file checked before use (`health`), its
//! schema and migrations (`schema`), one writer thread with group commit (`writer`), a
//! small pool of read connections (`readers`), the WAL checkpoints off the writer
//! (`checkpointer`) and online backups (`backup`). The domain operations that use them are
//! in the files of `store/`, by resource.

pub mod backup;
pub(super) mod checkpointer;
pub mod health;
pub(super) mod readers;
pub(crate) mod schema;
pub(super) mod writer;

/// The SQLite backend (being moved here from the domain files).
pub(crate) struct SqliteBackend;
