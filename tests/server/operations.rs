//! Running a server: `/metrics`, `tf backup` while jobs arrive, and one server per
//! data dir.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use tf_test_support::postgres::skipped_on_postgres;
use tf_test_support::server::Server;
use tf_test_support::{tf, tf_clients};

fn metric_lines(server: &Server) -> Vec<String> {
    let response = server.get("/metrics");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    response.text().lines().map(str::to_string).collect()
}

fn has(lines: &[String], expected: &str) -> bool {
    lines.iter().any(|line| line == expected)
}

#[test]
fn metrics_count_jobs_claims_fragments_and_requests() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    // rpi is advertised; maas is served by an agent; anything else is "other".
    let advertised = server
        .agent()
        .post_json("/v1/agents/queues", &json!({"rpi": "Pis"}));
    assert_eq!(advertised.status, 200);
    let served = server.agent().post_json(
        "/v1/agents/data/dev-2",
        &json!({"state": "waiting", "queues": ["maas"]}),
    );
    assert_eq!(served.status, 200);
    server.submit(&json!({"job_queue": "made-up-1"}));
    server.submit(&json!({"job_queue": "made-up-2"}));
    let first = server.submit(&json!({"job_queue": "rpi"}));
    server.submit(&json!({"job_queue": "rpi"}));
    server.submit(&json!({"job_queue": "maas"}));
    assert_eq!(
        server.claim("dev-1", "rpi").unwrap()["job_id"],
        json!(first)
    );
    let fragment = json!({"fragment_number": 0, "timestamp": "2026-01-01T10:00:00", "phase": "setup", "log_data": "x"});
    let path = format!("/v1/result/{first}/log/output");
    assert_eq!(server.agent().post_json(&path, &fragment).status, 200);
    server.get("/no/such/page");

    let lines = metric_lines(&server);
    for expected in [
        "tf_jobs{queue=\"rpi\",state=\"waiting\"} 1",
        "tf_jobs{queue=\"rpi\",state=\"running\"} 1",
        "tf_jobs{queue=\"maas\",state=\"waiting\"} 1",
        "tf_jobs{queue=\"other\",state=\"waiting\"} 2",
        "tf_agents{state=\"waiting\"} 1",
        "tf_jobs_submitted_total 5",
        "tf_job_claims_total 1",
        "tf_log_fragments_total{log_type=\"output\"} 1",
        "tf_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/job\",code=\"200\"} 5",
        "tf_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/job\",code=\"200\"} 1",
        "tf_http_request_duration_seconds_count{method=\"GET\",route=\"unmatched\",code=\"404\"} 1",
    ] {
        assert!(
            has(&lines, expected),
            "no {expected:?} in\n{}",
            lines.join("\n")
        );
    }

    // Job counts come from the database, counters from this run of the server.
    drop(server);
    let again = Server::start_in(data.path(), &[]);
    let lines = metric_lines(&again);
    assert!(has(&lines, "tf_jobs{queue=\"rpi\",state=\"waiting\"} 1"));
    assert!(has(&lines, "tf_jobs_submitted_total 0"));
}

#[test]
fn a_backup_taken_during_submissions_restores_every_job_acknowledged_before_it() {
    if skipped_on_postgres() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    // One job with an artifact, so archives are part of the backup.
    let with_artifact = server.submit(&json!({"job_queue": "q", "name": "artifact"}));
    let artifact_path = format!("/v1/result/{with_artifact}/artifact");
    let upload = server
        .agent()
        .upload(&artifact_path, "file", b"artifact bytes");
    assert_eq!(upload.status, 200);

    // Submissions go on in the background for the whole backup.
    let acknowledged_before = Arc::new(Mutex::new(Vec::new()));
    let backup_began = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (caller, acknowledged, began, stop) = (
            (*server).clone(),
            acknowledged_before.clone(),
            backup_began.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut submitted = 0;
            while !stop.load(Ordering::SeqCst) || submitted < 20 {
                let id =
                    caller.submit(&json!({"job_queue": "q", "name": format!("job {submitted}")}));
                if !began.load(Ordering::SeqCst) {
                    acknowledged.lock().unwrap().push(id);
                }
                submitted += 1;
            }
            submitted
        })
    };
    while acknowledged_before.lock().unwrap().len() < 20 {
        std::thread::yield_now();
    }
    let backup = tempfile::tempdir().unwrap();
    let destination = backup.path().join("tf-data-backup");
    backup_began.store(true, Ordering::SeqCst);
    let output = tf(&[
        "backup",
        "--data-dir",
        data.path().to_str().unwrap(),
        destination.to_str().unwrap(),
    ]);
    stop.store(true, Ordering::SeqCst);
    let submitted = submitter.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("and 1 archives (14 bytes)"), "{stdout}");
    // Finished in place: nothing half-made beside it, and the database private.
    assert!(!backup.path().join("tf-data-backup.partial").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(destination.join("tf.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(submitted > 20);

    // Restoring is starting a server on the backup (the harness's agent secret file is
    // the harness's own, not part of the data).
    drop(server);
    std::fs::copy(
        data.path().join("tf-test-agent.secret"),
        destination.join("tf-test-agent.secret"),
    )
    .unwrap();
    let restored = Server::start_in(&destination, &[]);
    let acknowledged = acknowledged_before.lock().unwrap().clone();
    for id in acknowledged.iter().chain([&with_artifact]) {
        let job = restored.get(&format!("/v1/job/{id}"));
        assert_eq!(job.status, 200, "job {id} missing from the backup");
    }
    let artifact = restored.get(&artifact_path);
    assert_eq!(artifact.status, 200);
    assert_eq!(artifact.body, b"artifact bytes");
    // The old tokens still work: the signing key came along.
    assert_eq!(restored.claim("dev-1", "q").map(|_| ()), Some(()));
}

#[test]
fn backups_refuse_a_non_empty_destination_a_missing_database_and_leftovers() {
    if skipped_on_postgres() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let taken = tempfile::tempdir().unwrap();
    std::fs::write(taken.path().join("old"), "x").unwrap();
    let no_database = tf(&[
        "backup",
        "--data-dir",
        data.path().to_str().unwrap(),
        taken.path().join("new").to_str().unwrap(),
    ]);
    assert!(!no_database.status.success());
    assert!(String::from_utf8_lossy(&no_database.stderr).contains("tf.db is missing"));

    let _server = Server::start_in(data.path(), &[]);
    let not_empty = tf(&[
        "backup",
        "--data-dir",
        data.path().to_str().unwrap(),
        taken.path().to_str().unwrap(),
    ]);
    assert!(!not_empty.status.success());
    assert!(String::from_utf8_lossy(&not_empty.stderr).contains("is not empty"));

    // What a cut-off backup left is never taken for, or mixed into, a new one.
    let target = taken.path().join("again");
    std::fs::create_dir(taken.path().join("again.partial")).unwrap();
    let leftover = tf(&[
        "backup",
        "--data-dir",
        data.path().to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    assert!(!leftover.status.success());
    assert!(String::from_utf8_lossy(&leftover.stderr).contains("did not finish"));
    assert!(!target.exists());

    // An existing empty directory is a fine destination.
    let empty = taken.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let into_empty = tf(&[
        "backup",
        "--data-dir",
        data.path().to_str().unwrap(),
        empty.to_str().unwrap(),
    ]);
    assert!(
        into_empty.status.success(),
        "{}",
        String::from_utf8_lossy(&into_empty.stderr)
    );
    assert!(empty.join("tf.db").is_file());
}

#[test]
fn healthz_says_the_server_can_serve() {
    let server = Server::start();
    let health = server.get("/healthz");
    assert_eq!((health.status, health.text()), (200, "ok\n".to_string()));
}

#[test]
fn a_second_server_on_the_same_data_dir_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    let _first = Server::start_in(data.path(), &[]);
    let second = tf(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another tf serve is using the data dir")
    );
}

#[test]
fn lab_host_tools_leave_the_uploads_in_progress_of_a_running_server_alone() {
    let data = tempfile::tempdir().unwrap();
    let _server = Server::start_in(data.path(), &[]);
    // An upload the server is receiving right now.
    let in_progress = data.path().join("blobs/incoming/upload-in-progress");
    std::fs::write(&in_progress, b"half an archive").unwrap();
    tf_clients(data.path(), &["list"]);
    assert!(
        in_progress.exists(),
        "tf clients deleted an upload in progress"
    );
}

/// The permission bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Runs `tf` with `args` under the usual umask of 022, which would leave new files
/// readable by everyone.
fn tf_with_open_umask(args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_tf"))
        .args(args)
        .output()
        .expect("run tf");
    assert!(
        output.status.success(),
        "tf {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_data_dir_and_database_are_private_whichever_command_creates_them() {
    let parent = tempfile::tempdir().unwrap();
    let by_clients = parent.path().join("by-clients");
    let secret = parent.path().join("secret");
    std::fs::write(&secret, "a-secret-of-enough-length").unwrap();
    tf_with_open_umask(&[
        "clients",
        "--data-dir",
        by_clients.to_str().unwrap(),
        "add",
        "ops",
        "--role",
        "admin",
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(mode(&by_clients), 0o700);
    for file in ["tf.db", "tf.db-wal", "tf.db-shm"] {
        let path = by_clients.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }

    // The server, started under the same umask on a new data dir.
    let by_server = parent.path().join("by-server");
    let script = format!(
        "umask 022 && exec '{}' serve --bind 127.0.0.1:0 --data-dir '{}'",
        env!("CARGO_BIN_EXE_tf"),
        by_server.display()
    );
    let mut server = std::process::Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !by_server.join("tf.db-wal").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let modes: Vec<u32> = ["", "tf.db", "tf.db-wal", "tf.db-shm"]
        .iter()
        .map(|file| mode(&by_server.join(file)))
        .collect();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(modes, [0o700, 0o600, 0o600, 0o600]);

    // A backup, taken under the same umask.
    let backup = parent.path().join("backup");
    tf_with_open_umask(&[
        "backup",
        "--data-dir",
        by_clients.to_str().unwrap(),
        backup.to_str().unwrap(),
    ]);
    assert_eq!(mode(&backup), 0o700);
    assert_eq!(mode(&backup.join("tf.db")), 0o600);
}
