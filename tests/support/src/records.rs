//! What a data dir's records hold, read behind the server's back, on whichever backend the
//! run keeps them (SQLite in the data dir, or its PostgreSQL database): for the tests that
//! check how something is stored (hashed, encrypted, with what expiry).

use std::path::Path;

use crate::postgres;

/// The first column of the first row `sql` gives, as text (`""` when there is none).
pub fn query(data_dir: &Path, sql: &str) -> String {
    match postgres::database_for(data_dir) {
        Some(url) => postgres::shared_cluster().sql_at(&url, sql),
        None => {
            let db = rusqlite::Connection::open(data_dir.join("tf.db")).expect("open tf.db");
            db.query_row(sql, [], |row| {
                Ok(match row.get_ref(0)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Real(x) => x.to_string(),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                })
            })
            .unwrap_or_default()
        }
    }
}

/// Every byte the records are kept in: SQLite's database file and its WAL, or a dump of
/// the PostgreSQL database.
pub fn every_byte(data_dir: &Path) -> Vec<u8> {
    match postgres::database_for(data_dir) {
        Some(url) => postgres::shared_cluster().dump(&url),
        None => {
            let mut bytes = std::fs::read(data_dir.join("tf.db")).expect("read tf.db");
            bytes.extend(std::fs::read(data_dir.join("tf.db-wal")).unwrap_or_default());
            bytes
        }
    }
}
