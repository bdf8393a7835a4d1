//! `tf backup`: an online backup of the server's data dir, on the lab host.

use std::path::PathBuf;

use crate::store::backup;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "The server may keep running. The backup is itself a data dir: to restore, stop the server and start it with --data-dir on (a copy of) the backup. Keys configured outside the data dir (--jwt-key-file, --secrets-key-file) must be backed up separately."
)]
pub struct BackupArgs {
    /// The server's data directory
    #[arg(long, env = "TF_DATA_DIR", default_value = super::config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Where to write the backup: a new or empty directory
    destination: PathBuf,
}

pub fn run(args: BackupArgs) -> anyhow::Result<()> {
    let report = backup::backup(&args.data_dir, &args.destination)?;
    println!(
        "Backed up {} jobs and {} archives ({} bytes) to {}",
        report.jobs,
        report.archives,
        report.archive_bytes,
        args.destination.display()
    );
    if report.key_files.is_empty() {
        println!(
            "No key files in the data dir: back up the configured JWT and secrets keys separately."
        );
    }
    if !report.vanished.is_empty() {
        println!(
            "{} archives were deleted by the server during the backup (expired or replaced); their rows were left out.",
            report.vanished.len()
        );
    }
    Ok(())
}
