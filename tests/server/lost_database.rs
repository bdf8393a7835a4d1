//! A lost database never deletes data: `tf serve`, `tf clients` and `tf backup` refuse a
//! missing, empty or corrupt `tf.db` next to archives or keys, and the orphan sweep only
//! deletes files the database it belongs with does not know.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use tf_test_support::http::{send, Response};
use tf_test_support::postgres::skipped_on_postgres;
use tf_test_support::server::Server;
use tf_test_support::tf;

/// A data dir a server used: a job with an artifact, and the generated keys. Returns the
/// archive files it holds.
fn used_data_dir(data_dir: &Path) -> Vec<PathBuf> {
    let server = Server::start_in(data_dir, &[]);
    let id = server.submit(&json!({"job_queue": "q"}));
    let upload = server
        .agent()
        .upload(&format!("/v1/result/{id}/artifact"), "file", b"precious");
    assert_eq!(upload.status, 200, "{}", upload.text());
    assert!(server.terminate());
    let archives = archives(data_dir);
    assert_eq!(archives.len(), 1);
    archives
}

/// The archive files in the data dir's `blobs/`.
fn archives(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("blobs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && !is_hidden(path))
        .collect();
    files.sort();
    files
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with('.'))
}

/// Removes the database with its WAL files, as a lost disk or a careless `rm` would.
fn remove_database(data_dir: &Path) {
    for file in ["tf.db", "tf.db-wal", "tf.db-shm"] {
        let _ = std::fs::remove_file(data_dir.join(file));
    }
}

/// Runs `tf serve` on `data_dir` expecting it to refuse; its error output.
fn refused_start(data_dir: &Path, extra: &[&str]) -> String {
    let output = run_serve(data_dir, extra);
    assert!(!output.status.success(), "tf serve started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn run_serve(data_dir: &Path, extra: &[&str]) -> Output {
    // A refusal exits at once; a start would run until the timeout kills it.
    Command::new("timeout")
        .args([
            "20",
            env!("CARGO_BIN_EXE_tf"),
            "serve",
            "--bind",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .output()
        .expect("run tf serve")
}

fn assert_explains_how_to_proceed(message: &str) {
    assert!(
        message.contains("backup") && message.contains("--start-afresh"),
        "says how to proceed: {message}"
    );
}

#[test]
fn a_missing_database_next_to_archives_and_keys_is_a_refusal() {
    let data = tempfile::tempdir().unwrap();
    let archives = used_data_dir(data.path());
    remove_database(data.path());
    let message = refused_start(data.path(), &[]);
    assert!(message.contains("tf.db is missing"), "{message}");
    assert!(
        message.contains("1 archive") && message.contains("secrets.key"),
        "says what it found: {message}"
    );
    assert_explains_how_to_proceed(&message);
    assert_eq!(std::fs::read(&archives[0]).unwrap(), b"precious");
    assert!(
        !data.path().join("tf.db").exists(),
        "no fresh database was created"
    );
}

#[test]
fn keys_alone_are_enough_to_refuse() {
    let data = tempfile::tempdir().unwrap();
    let archives = used_data_dir(data.path());
    std::fs::remove_file(&archives[0]).unwrap();
    remove_database(data.path());
    let message = refused_start(data.path(), &[]);
    assert!(message.contains("jwt-signing.key"), "{message}");
}

#[test]
fn an_emptied_database_is_a_refusal() {
    let data = tempfile::tempdir().unwrap();
    let archives = used_data_dir(data.path());
    remove_database(data.path());
    std::fs::write(data.path().join("tf.db"), b"").unwrap();
    let message = refused_start(data.path(), &[]);
    assert!(message.contains("tf.db is empty"), "{message}");
    assert_explains_how_to_proceed(&message);
    assert_eq!(std::fs::read(&archives[0]).unwrap(), b"precious");
}

#[test]
fn a_garbage_database_is_a_refusal_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    used_data_dir(data.path());
    remove_database(data.path());
    std::fs::write(data.path().join("tf.db"), "not a database\n".repeat(1000)).unwrap();
    let message = refused_start(data.path(), &[]);
    assert!(
        message.contains("tf.db is not a usable tf database")
            && message.contains("file is not a database"),
        "{message}"
    );
    assert_explains_how_to_proceed(&message);
}

#[test]
fn a_database_with_damaged_pages_is_a_refusal() {
    if skipped_on_postgres() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    used_data_dir(data.path());
    let db = data.path().join("tf.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "more than one page");
    // Every page after the first (the header and the schema's root) is overwritten.
    for (n, byte) in bytes.iter_mut().enumerate().skip(4096) {
        *byte = (n % 251) as u8;
    }
    std::fs::write(&db, bytes).unwrap();
    let message = refused_start(data.path(), &[]);
    assert!(
        message.contains("tf.db is not a usable tf database"),
        "{message}"
    );
    assert_explains_how_to_proceed(&message);
}

/// `tf serve` started without the harness's test client (a new database has none).
struct BareServer {
    child: std::process::Child,
    address: String,
}

impl BareServer {
    fn start(data_dir: &Path, extra: &[&str]) -> BareServer {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tf"))
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tf serve");
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut lines = stderr.lines().map_while(Result::ok);
        let address = lines
            .find_map(|line| {
                let rest = line.split("listening on http://").nth(1)?;
                Some(rest.split(',').next()?.to_string())
            })
            .expect("tf serve listens");
        std::thread::spawn(move || lines.for_each(drop));
        BareServer { child, address }
    }

    fn get(&self, path: &str) -> Response {
        send(&self.address, "GET", path, &[], b"").unwrap()
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn start_afresh_sets_the_old_data_aside_and_starts_empty() {
    let data = tempfile::tempdir().unwrap();
    let archives = used_data_dir(data.path());
    remove_database(data.path());
    let old_key = std::fs::read(data.path().join("secrets.key")).unwrap();
    let server = BareServer::start(data.path(), &["--start-afresh"]);
    assert_eq!(server.get("/v1/job/search").json(), json!([]));
    drop(server);

    let set_aside: Vec<PathBuf> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("set-aside-")
        })
        .collect();
    assert_eq!(set_aside.len(), 1, "one directory holds the old data");
    let archive_name = archives[0].file_name().unwrap();
    assert_eq!(
        std::fs::read(set_aside[0].join("blobs").join(archive_name)).unwrap(),
        b"precious"
    );
    assert_eq!(
        std::fs::read(set_aside[0].join("secrets.key")).unwrap(),
        old_key
    );
    // The next start uses the new database as it is.
    let again = BareServer::start(data.path(), &[]);
    assert_eq!(again.get("/v1/").status, 200);
}

#[test]
fn start_afresh_leaves_a_healthy_database_alone() {
    let data = tempfile::tempdir().unwrap();
    let archives = used_data_dir(data.path());
    let server = Server::start_in(data.path(), &["--start-afresh"]);
    assert_eq!(
        server
            .get("/v1/job/search")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(std::fs::read(&archives[0]).unwrap(), b"precious");
}

#[test]
fn a_fresh_data_dir_starts() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("new").join("tf-data");
    let server = BareServer::start(&data_dir, &[]);
    assert_eq!(server.get("/v1/").status, 200);
    assert!(data_dir.join("tf.db").exists());
}

#[test]
fn tf_clients_does_not_create_a_database_over_lost_data() {
    let data = tempfile::tempdir().unwrap();
    used_data_dir(data.path());
    remove_database(data.path());
    let dir = data.path().to_str().unwrap();
    let output = tf(&[
        "clients",
        "--data-dir",
        dir,
        "add",
        "ops",
        "--role",
        "admin",
    ]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("tf.db is missing"), "{message}");
    assert!(!data.path().join("tf.db").exists());
}

#[test]
fn tf_backup_refuses_a_lost_database() {
    let data = tempfile::tempdir().unwrap();
    used_data_dir(data.path());
    remove_database(data.path());
    std::fs::write(data.path().join("tf.db"), b"").unwrap();
    let destination = data.path().join("backup");
    let output = tf(&[
        "backup",
        "--data-dir",
        data.path().to_str().unwrap(),
        destination.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("tf.db is empty"), "{message}");
    assert!(!destination.exists());
    assert_eq!(
        std::fs::metadata(data.path().join("tf.db")).unwrap().len(),
        0
    );
}

/// Makes a file look older than the orphan sweep's grace period.
fn age(path: &Path) {
    let status = Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_orphan_sweep_leaves_alone_archives_of_another_database() {
    if skipped_on_postgres() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let archives = used_data_dir(data.path());
    age(&archives[0]);
    // A healthy database from another data dir, which has never seen these archives.
    let other = tempfile::tempdir().unwrap();
    let server = Server::start_in(other.path(), &[]);
    assert!(server.terminate());
    remove_database(data.path());
    std::fs::copy(other.path().join("tf.db"), data.path().join("tf.db")).unwrap();

    let server = Server::start_in(data.path(), &[]);
    // The expiry pass, sweep included, runs at start-up; give it time to have run.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.get("/v1/").status, 200);
    assert_eq!(std::fs::read(&archives[0]).unwrap(), b"precious");
}

#[test]
fn the_orphan_sweep_deletes_old_files_its_own_database_does_not_know() {
    let data = tempfile::tempdir().unwrap();
    let archives = used_data_dir(data.path());
    age(&archives[0]);
    // A data dir from before the sweep's marker existed gets one at start.
    let _ = std::fs::remove_file(data.path().join("blobs").join(".store-id"));
    let orphan = data.path().join("blobs").join("left-by-a-crash");
    std::fs::write(&orphan, b"nobody's").unwrap();
    age(&orphan);

    let _server = Server::start_in(data.path(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while orphan.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!orphan.exists(), "the orphan was swept");
    assert_eq!(std::fs::read(&archives[0]).unwrap(), b"precious");
}

#[test]
fn processes_opening_a_fresh_data_dir_at_once_all_succeed() {
    // A server's first start and `tf clients` on the same new data dir: whichever comes
    // second must find a finished database, not a half-made one it mistakes for lost.
    for round in 0..5 {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("tf-data");
        let dir = dir.to_str().unwrap();
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_tf"))
                    .args(["clients", "--data-dir", dir, "list"])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}
