//! A SQLite lab copied into an empty PostgreSQL database (`tf migrate`): every table, read
//! in one SQLite snapshot and written with binary `COPY` in one PostgreSQL transaction, so
//! either the whole history arrives or nothing does. Values keep their exact text (job
//! definitions keep their key order); SQLite's rowids become the `seq` of the tables that
//! expire by them, and every identity continues after the rows copied.

use std::error::Error;
use std::path::Path;

use bytes::{BufMut, BytesMut};
use futures_util::pin_mut;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Client;

use crate::store::error::StoreError;

/// The tables, in an order that copies jobs before the rows that refer to them.
const TABLES: &[&str] = &[
    "store_meta",
    "jobs",
    "log_fragments",
    "blobs",
    "agents",
    "provision_logs",
    "queues",
    "wait_times",
    "clients",
    "refresh_tokens",
    "restricted_queues",
    "secrets",
    "legacy_results",
    "legacy_stream_reads",
];

/// PostgreSQL's explicit `seq` where SQLite keys rows by their rowid alone.
const ROWID_COLUMN: &str = "seq";

/// How many rows of each table were copied, in the order copied, and the archive files
/// (under the data dir's `blobs/`) the copied rows name.
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64)>,
    pub archives: Vec<String>,
}

impl CopyReport {
    pub fn rows_of(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|(name, _)| *name == table)
            .map_or(0, |(_, rows)| *rows)
    }
}

/// Copies the SQLite database `source` into `target`, whose schema is current and which
/// must hold no lab yet. `copied` hears of each table as it is done (a large lab takes
/// minutes); nothing is committed before the last.
pub async fn copy(
    source: &Path,
    target: &mut Client,
    mut copied: impl FnMut(&str, u64),
) -> Result<CopyReport, StoreError> {
    for table in TABLES {
        let has_rows: bool = target
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await?
            .get(0);
        if has_rows {
            return Err(StoreError::Database(format!(
                "the PostgreSQL database already holds a lab (its table {table} has rows); \
                 tf migrate copies into an empty database only"
            )));
        }
    }
    let sqlite = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // One read transaction: every table as of the same moment.
    let snapshot = sqlite.unchecked_transaction()?;
    check_shape(&snapshot)?;
    let transaction = target.transaction().await?;
    let mut report = CopyReport {
        tables: Vec::new(),
        archives: archive_names(&snapshot)?,
    };
    for &table in TABLES {
        let rows = copy_table(&snapshot, &transaction, table).await?;
        copied(table, rows);
        report.tables.push((table, rows));
    }
    // Identities continue after the rows copied. (A failed statement would abort the
    // transaction, and its commit would then quietly roll back: nothing here may fail.)
    let identities = transaction
        .query(
            "SELECT table_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND column_name = $1 AND is_identity = 'YES'",
            &[&ROWID_COLUMN],
        )
        .await?;
    for row in identities {
        let table: String = row.get(0);
        if !TABLES.contains(&table.as_str()) {
            continue;
        }
        transaction
            .execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{ROWID_COLUMN}'),
                                   coalesce((SELECT max({ROWID_COLUMN}) FROM {table}), 0) + 1,
                                   false)"
                ),
                &[],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(report)
}

/// Copies one table: PostgreSQL's columns, read from SQLite under the same names (SQLite's
/// rowid for a `seq` it lacks).
async fn copy_table(
    sqlite: &Connection,
    target: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> Result<u64, StoreError> {
    let shape = target
        .prepare(&format!("SELECT * FROM {table} LIMIT 0"))
        .await?;
    let columns: Vec<(String, Type)> = shape
        .columns()
        .iter()
        .map(|column| (column.name().to_string(), column.type_().clone()))
        .collect();
    let sqlite_has = sqlite_columns(sqlite, table)?;
    if let Some(lost) = sqlite_has
        .iter()
        .find(|name| !columns.iter().any(|(column, _)| column == *name))
    {
        return Err(StoreError::Database(format!(
            "{table}.{lost} has no place in PostgreSQL: this tf cannot copy it"
        )));
    }
    let read = columns
        .iter()
        .map(|(name, _)| match sqlite_has.contains(name) {
            true => Ok(format!("\"{name}\"")),
            false if name == ROWID_COLUMN => Ok("rowid".to_string()),
            false => Err(StoreError::Database(format!(
                "the SQLite database has no {table}.{name}: this tf cannot copy it"
            ))),
        })
        .collect::<Result<Vec<String>, StoreError>>()?;
    let names: Vec<String> = columns
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    let types: Vec<Type> = columns.iter().map(|(_, kind)| kind.clone()).collect();
    let sink = target
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN BINARY",
            names.join(", ")
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut query = sqlite.prepare(&format!("SELECT {} FROM {table}", read.join(", ")))?;
    let mut rows = query.query([])?;
    while let Some(row) = rows.next()? {
        let cells = (0..columns.len())
            .map(|index| row.get::<_, Value>(index).map(Cell))
            .collect::<rusqlite::Result<Vec<Cell>>>()?;
        let values: Vec<&(dyn ToSql + Sync)> = cells
            .iter()
            .map(|cell| cell as &(dyn ToSql + Sync))
            .collect();
        writer
            .as_mut()
            .write(&values)
            .await
            .map_err(|error| in_table(table, error))?;
    }
    writer
        .finish()
        .await
        .map_err(|error| in_table(table, error))
}

/// An error of the copy of `table`, saying which table (PostgreSQL's own text says which
/// row, in its context line).
fn in_table(table: &str, error: tokio_postgres::Error) -> StoreError {
    let context = error
        .as_db_error()
        .and_then(|reported| reported.where_())
        .map(|place| format!(" ({place})"))
        .unwrap_or_default();
    StoreError::Database(format!(
        "copying {table}: {}{context}",
        StoreError::from(error)
    ))
}

/// Refuses a SQLite database this tf does not write: another schema version (its columns
/// would be lost or left empty), or a table the copy does not know.
fn check_shape(sqlite: &Connection) -> Result<(), StoreError> {
    let version: usize = sqlite.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = crate::store::sqlite::schema::current_version();
    if version != known {
        return Err(StoreError::Database(format!(
            "the SQLite database is at schema version {version}, this tf copies version \
             {known}: migrate with the tf that serves it (or start this tf's server on it once)"
        )));
    }
    let mut query = sqlite.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )?;
    let tables = query.query_map([], |row| row.get::<_, String>(0))?;
    for table in tables {
        let table = table?;
        if !TABLES.contains(&table.as_str()) {
            return Err(StoreError::Database(format!(
                "the SQLite table {table} has no place in PostgreSQL: this tf cannot copy it"
            )));
        }
    }
    Ok(())
}

fn archive_names(sqlite: &Connection) -> Result<Vec<String>, StoreError> {
    let mut query = sqlite.prepare("SELECT file_name FROM blobs")?;
    let names = query.query_map([], |row| row.get(0))?;
    Ok(names.collect::<rusqlite::Result<Vec<String>>>()?)
}

fn sqlite_columns(sqlite: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
    let mut query = sqlite.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = query.query_map([table], |row| row.get(0))?;
    Ok(names.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// A SQLite value written as the PostgreSQL column's type wants it: integers as BIGINT or,
/// for SQLite's 0/1 flags, BOOLEAN; JSON text as `json`/`jsonb` unchanged; any other pair
/// is refused rather than reinterpreted. PostgreSQL's text cannot hold NUL characters,
/// which agents may send in logs: they become U+FFFD.
#[derive(Debug)]
struct Cell(Value);

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match (&self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(n), &Type::BOOL) => (*n != 0).to_sql(ty, out),
            (Value::Integer(n), &Type::INT8) => n.to_sql(ty, out),
            (Value::Real(x), &Type::FLOAT8) => x.to_sql(ty, out),
            (Value::Text(text), &Type::JSON | &Type::JSONB) => {
                if *ty == Type::JSONB {
                    out.put_u8(1); // jsonb's binary format: a version byte, then the text
                }
                out.put_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            (Value::Text(text), &Type::TEXT) => {
                text.replace('\0', "\u{FFFD}").as_str().to_sql(ty, out)
            }
            (Value::Blob(bytes), &Type::BYTEA) => bytes.as_slice().to_sql(ty, out),
            (value, _) => {
                Err(format!("a {} value cannot go into a {ty} column", kind(value)).into())
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}
