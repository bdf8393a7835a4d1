//! `tf migrate`: a lab's history moved from its SQLite data dir into PostgreSQL.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::store::health::{self, DatabaseState};
use crate::store::postgres;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Stop tf serve first: the data dir stays locked against it while the copy runs, so nothing written after the copy is left behind. Everything in the database moves (jobs, logs, results, clients, tokens, secrets, agents, queues); the archives stay in the data dir's blobs/, and the secrets stay encrypted under the data dir's key, so keep the data dir (or its key files and blobs/) for the server that runs on PostgreSQL. The database must be empty; its schema is created."
)]
pub struct MigrateArgs {
    /// The server's data directory, holding the SQLite database to copy
    #[arg(long, env = "TF_DATA_DIR", default_value = super::config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The empty PostgreSQL database to copy into: postgres://USER@HOST[:PORT]/DB (the
    /// password from PGPASSWORD, not the command line, which others on the host can see)
    #[arg(long, value_name = "URL")]
    to: String,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let database = args.data_dir.join(health::DATABASE_FILE);
    let state = health::inspect(&database, health::Check::Readable);
    if state != DatabaseState::Healthy {
        bail!("{}: there is nothing to migrate", state.describe(&database));
    }
    let target = postgres::Database::parse(&args.to)?;
    let _no_server = crate::store::lock_for_server(&args.data_dir, crate::store::DataDirUse::Alone)
        .context("stop tf serve before migrating its data dir")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let mut client = target
            .connect()
            .await
            .with_context(|| format!("cannot use the PostgreSQL database {}", target.describe()))?;
        println!(
            "Copying {} (committed once every table is in):",
            database.display()
        );
        let copied = |table: &str, rows: u64| println!("  {table}: {rows} rows");
        postgres::copy::copy(&database, &mut client, copied)
            .await
            .context("nothing was copied")
    })?;
    println!(
        "Copied {} jobs, {} log fragments, {} clients and {} agents from {} to {}",
        report.rows_of("jobs"),
        report.rows_of("log_fragments"),
        report.rows_of("clients"),
        report.rows_of("agents"),
        database.display(),
        target.describe()
    );
    report_archives(&args.data_dir.join("blobs"), &report.archives);
    Ok(())
}

/// The archives stay where they are: says how many the moved lab needs from the data dir,
/// and which of them are already missing there.
fn report_archives(blobs: &std::path::Path, archives: &[String]) {
    let missing: Vec<&String> = archives
        .iter()
        .filter(|name| !blobs.join(name).is_file())
        .collect();
    println!(
        "The moved lab's {} archives stay in {}: the server on PostgreSQL needs that directory.",
        archives.len(),
        blobs.display()
    );
    if !missing.is_empty() {
        let some: Vec<&str> = missing.iter().take(5).map(|name| name.as_str()).collect();
        println!(
            "Warning: {} of them are missing there already (their downloads will fail): {}{}",
            missing.len(),
            some.join(", "),
            if missing.len() > some.len() {
                ", …"
            } else {
                ""
            }
        );
    }
}
