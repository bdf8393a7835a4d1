//! How a server holds its data dir (the keys, the archives and, on SQLite, the records).

/// Alone (its records are in SQLite there), or shared with the other servers of a
/// PostgreSQL database (replicas on one host or one mount).
#[derive(Clone, Copy)]
pub(crate) enum DataDirUse {
    Alone,
    Shared,
}
