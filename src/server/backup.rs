//! `tf backup`: an online backup of the server's data dir, on the lab host.

use std::path::PathBuf;

use crate::store::postgres::Database;
use crate::store::{backup, DatabaseChoice, SyncMode};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The server may keep running. The backup is itself a data dir: to restore, stop the server and start it with --data-dir on (a copy of) the backup. Keys configured outside the data dir (--jwt-key-file, --secrets-key-file) must be backed up separately."
)]
pub struct BackupArgs {
    /// The server's data directory
    #[arg(long, env = "TF_DATA_DIR", default_value = super::config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The server's PostgreSQL database, when it has one (`tf serve --database`): its
    /// records are then backed up with pg_dump, and this backs up the archives and keys
    #[arg(long, env = "TF_DATABASE", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// Where to write the backup: a new or empty directory
    destination: PathBuf,
}

pub fn run(args: BackupArgs) -> anyhow::Result<()> {
    let database = match &args.database {
        Some(url) => DatabaseChoice::Postgres(Box::new(Database::parse(url)?)),
        None => DatabaseChoice::Sqlite(SyncMode::Normal),
    };
    let on_postgres = match &database {
        DatabaseChoice::Postgres(database) => Some(database.describe()),
        DatabaseChoice::Sqlite(_) => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(backup::backup(&args.data_dir, &args.destination, database))?;
    let jobs = report
        .jobs
        .map(|jobs| format!("{jobs} jobs and "))
        .unwrap_or_default();
    println!(
        "Backed up {jobs}{} archives ({} bytes) to {}",
        report.archives,
        report.archive_bytes,
        args.destination.display()
    );
    if let Some(database) = &on_postgres {
        println!(
            "The records are in {database}: back them up with pg_dump (docs/operations.md, \"Running on PostgreSQL\"), \
             and keep that dump with this backup: the one needs the other."
        );
    }
    if report.key_files.is_empty() {
        println!(
            "No key files in the data dir: back up the configured JWT and secrets keys separately."
        );
    }
    if !report.vanished.is_empty() {
        match on_postgres {
            None => println!(
                "{} archives were deleted by the server during the backup (expired or replaced); their rows were left out.",
                report.vanished.len()
            ),
            Some(_) => println!(
                "{} archives the database points to are not in {}: deleted by the server during the backup, or lost: {}",
                report.vanished.len(),
                args.data_dir.join("blobs").display(),
                report.vanished.join(", ")
            ),
        }
    }
    Ok(())
}
