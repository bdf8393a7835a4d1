//! What the integration tests share: the real `tf serve` on a free port ([`server`]), a
//! tiny HTTP client that shows the exact bytes ([`http`]), the real `tf agent` with a
//! config in the reference format ([`agent`]), a throwaway PostgreSQL cluster ([`postgres`]),
//! HAProxy in front of replicas ([`haproxy`]) and patient waiting ([`wait`]).
//!
//! Every test binary in `tests/` uses it as `tf_test_support`; a helper that two test
//! binaries need lives here, not in a copy.

pub mod agent;
pub mod haproxy;
pub mod http;
pub mod postgres;
pub mod records;
pub mod server;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `tf` binary under test. Cargo builds it for the integration tests and tells them
/// where it is in `CARGO_BIN_EXE_tf`: at compile time (`env!`, the test's own crate
/// only) and, since cargo 1.94, at run time too, which is what a dependency such as this
/// crate can read.
pub fn tf_binary() -> PathBuf {
    std::env::var_os("CARGO_BIN_EXE_tf")
        .map(PathBuf::from)
        .expect("CARGO_BIN_EXE_tf is not set: run the tests with `cargo test`")
}

/// Runs `tf` with `args` to the end.
pub fn tf(args: &[&str]) -> Output {
    Command::new(tf_binary())
        .args(args)
        .output()
        .expect("run tf")
}

/// A `tf` command on `data_dir`: on the data dir's PostgreSQL database when the run is
/// on PostgreSQL (see `postgres::database_for`), else on its SQLite database.
pub fn tf_on(data_dir: &Path) -> Command {
    let mut command = Command::new(tf_binary());
    match postgres::database_for(data_dir) {
        Some(url) => command.env("TF_DATABASE", url),
        None => command.env_remove("TF_DATABASE"),
    };
    command
}

/// Runs `tf clients …` on a data dir to the end.
pub fn tf_clients_output(data_dir: &Path, args: &[&str]) -> Output {
    tf_on(data_dir)
        .arg("clients")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run tf clients")
}

/// Runs `tf clients …` on a data dir; panics with its output on failure.
pub fn tf_clients(data_dir: &Path, args: &[&str]) -> String {
    let output = tf_clients_output(data_dir, args);
    assert!(
        output.status.success(),
        "tf clients {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates a client with `secret` on a data dir.
pub fn add_client(data_dir: &Path, client_id: &str, role: &str, secret: &str, extra: &[&str]) {
    let secret_file = data_dir.join(format!("{client_id}.secret"));
    std::fs::write(&secret_file, secret).expect("write secret file");
    let mut args = vec![
        "add",
        client_id,
        "--role",
        role,
        "--secret-file",
        secret_file.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    tf_clients(data_dir, &args);
}
