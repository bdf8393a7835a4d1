//! What can go wrong in the store, and the `Result` of its operations.

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the disk is full ({0})")]
    DiskFull(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("file error: {0}")]
    Io(String),
    #[error("the store is shutting down")]
    Closed,
    /// The database server cannot be reached (down, restarting, unreachable); the server
    /// reconnects by itself once it is back.
    #[error("the database is unavailable, try again shortly ({0})")]
    Unavailable(String),
    #[error("job {0} already exists")]
    DuplicateJob(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull(error.to_string()),
            _ => StoreError::Database(error.to_string()),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StoreError::DiskFull(error.to_string())
            }
            _ => StoreError::Io(error.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(error: serde_json::Error) -> Self {
        StoreError::Database(format!("stored JSON is unreadable: {error}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        // The error's own text is "db error" for everything the server reported; what it
        // said is in the source.
        let text = match error.as_db_error() {
            Some(reported) => format!("{}: {}", reported.severity(), reported.message()),
            None => match std::error::Error::source(&error) {
                Some(cause) => format!("{error}: {cause}"),
                None => error.to_string(),
            },
        };
        use tokio_postgres::error::SqlState;
        match error.code() {
            Some(&SqlState::DISK_FULL) => StoreError::DiskFull(text),
            // Class 08 (connection exceptions), and a server shutting down or starting up.
            Some(code)
                if code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                    ]
                    .contains(code) =>
            {
                StoreError::Unavailable(text)
            }
            Some(_) => StoreError::Database(text),
            // No answer from the server at all: the connection broke or never was.
            None if error.is_closed()
                || std::error::Error::source(&error)
                    .is_some_and(|cause| cause.is::<std::io::Error>()) =>
            {
                StoreError::Unavailable(text)
            }
            None => StoreError::Database(text),
        }
    }
}
