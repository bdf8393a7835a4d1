//! What `tf backup` needs of the records it copies, whichever backend keeps them
//! (`store/backup.rs`; SQLite's copy in `store/sqlite/backup.rs`).

/// The records' side of a backup: what is copied into the new data dir before the
/// archives, and what to do about an archive that is gone.
pub(crate) trait RecordsCopy {
    /// The number of jobs copied, if the records are copied at all.
    fn jobs(&self) -> Option<u64>;
    /// Every archive file the copied records point to.
    fn archives(&self) -> anyhow::Result<Vec<String>>;
    /// An archive was gone when it was to be copied.
    fn forget(&self, file_name: &str) -> anyhow::Result<()>;
}
