//! The ground the server tests stand on when they run on PostgreSQL: a cluster of their
//! own, started on a free port and gone after the test (`tf_test_support::postgres`); and
//! `tf migrate`, which moves a SQLite lab into it.

use std::net::TcpStream;
use std::path::Path;
use std::process::Output;

use serde_json::json;
use tf_test_support::postgres::{keep_records_in, skipped_on_postgres, Postgres};
use tf_test_support::server::Server;
use tf_test_support::tf;

#[test]
fn a_throwaway_cluster_serves_a_database_of_its_own_and_is_gone_after_the_test() {
    let cluster = Postgres::start();
    let url = cluster.create_database("tf_harness");
    assert_eq!(
        url,
        format!("postgres://tf@127.0.0.1:{}/tf_harness", cluster.port)
    );
    cluster.sql(
        "tf_harness",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1)",
    );
    assert_eq!(cluster.sql("tf_harness", "SELECT sum(x) FROM t"), "42");
    let port = cluster.port;
    drop(cluster);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the cluster still listens after the test"
    );
}

/// Row counts of every table of the SQLite lab (its own list, not `tf migrate`'s, so a
/// table the copy left out shows), and of the same tables in PostgreSQL.
fn row_counts(database: &Path, cluster: &Postgres, name: &str) -> Vec<(String, i64, i64)> {
    let sqlite = rusqlite::Connection::open(database).expect("open the lab's database");
    let tables: Vec<String> = sqlite
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .and_then(|mut query| query.query_map([], |row| row.get(0))?.collect())
        .expect("the lab's tables");
    tables
        .into_iter()
        .map(|table| {
            let count = format!("SELECT count(*) FROM {table}");
            let in_sqlite = sqlite
                .query_row(&count, [], |row| row.get(0))
                .expect("count");
            let in_postgres = cluster.sql(name, &count).parse().expect("a count");
            (table, in_sqlite, in_postgres)
        })
        .collect()
}

/// A lab with a job and its artifact, its server stopped: ready to move.
fn stopped_lab_with_an_artifact() -> tempfile::TempDir {
    let lab = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in(lab.path(), &[]);
    let id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "true"}}));
    let uploaded = server
        .agent()
        .upload(&format!("/v1/result/{id}/artifact"), "file", b"results");
    assert_eq!(uploaded.text(), "OK");
    assert!(server.terminate());
    lab
}

/// A stopped lab with an artifact, moved into a throwaway cluster's database `lab`.
fn moved_lab() -> (tempfile::TempDir, Postgres, String) {
    let lab = stopped_lab_with_an_artifact();
    let cluster = Postgres::start();
    let url = cluster.create_database("lab");
    assert!(migrate(lab.path(), &url).status.success());
    (lab, cluster, url)
}

fn migrate(lab: &Path, url: &str) -> Output {
    let data_dir = lab.to_str().expect("a UTF-8 path");
    tf(&["migrate", "--data-dir", data_dir, "--to", url])
}

/// Exit code 1 and what was said on stderr.
fn refusal(output: &Output) -> String {
    let complaint = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{complaint}");
    assert!(!complaint.contains("panicked"), "{complaint}");
    complaint
}

#[test]
fn a_lab_moves_to_postgres_with_its_history_exactly() {
    if skipped_on_postgres() {
        return;
    }
    let lab = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in(lab.path(), &[]);
    // Keys out of alphabetical order: the definition must keep its text.
    let job =
        json!({"job_queue": "moved", "test_data": {"test_cmds": "echo hi"}, "tags": ["b", "a"]});
    let first = server.submit(&job);
    server.submit(&job);
    let claimed = server.claim("agent-1", "moved").expect("a job to claim");
    assert_eq!(claimed["job_id"], first.as_str());
    // A NUL, which agents may send and PostgreSQL's text cannot hold.
    let fragment = json!({"fragment_number": 0, "timestamp": "2026-01-01T00:00:00",
                          "phase": "test", "log_data": "hello\u{0}\n"});
    let posted = server
        .agent()
        .post_json(&format!("/v1/result/{first}/log/output"), &fragment);
    assert_eq!(posted.status, 200, "{}", posted.text());
    let uploaded =
        server
            .agent()
            .upload(&format!("/v1/result/{first}/artifact"), "file", b"results");
    assert_eq!(uploaded.text(), "OK");
    let owner = server.client("owner", "contributor", &[]);
    assert_eq!(owner.put_secret("owner", "lab/key", "s3cret").status, 200);
    assert!(server.terminate(), "the lab server stops cleanly");

    let cluster = Postgres::start();
    let url = cluster.create_database("lab");
    let moved = migrate(lab.path(), &url);
    let said = String::from_utf8_lossy(&moved.stdout);
    assert!(
        moved.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(
        said.contains("\n  jobs: 2 rows\n"),
        "each table is reported: {said}"
    );
    assert!(said.contains("Copied 2 jobs, 1 log fragments"), "{said}");
    assert!(
        said.contains("The moved lab's 1 archives stay in"),
        "{said}"
    );
    assert!(!said.contains("missing"), "{said}");

    let database = lab.path().join("tf.db");
    for (table, in_sqlite, in_postgres) in row_counts(&database, &cluster, "lab") {
        assert_eq!(in_postgres, in_sqlite, "rows of {table}");
    }
    let sqlite = rusqlite::Connection::open(&database).expect("open");
    let definition: String = sqlite
        .query_row(
            "SELECT job_data FROM jobs WHERE job_id = ?1",
            [&first],
            |row| row.get(0),
        )
        .expect("the job's definition");
    let moved_definition = cluster.sql(
        "lab",
        &format!("SELECT job_data::text FROM jobs WHERE job_id = '{first}'"),
    );
    assert_eq!(moved_definition, definition);
    assert_eq!(
        cluster.sql("lab", "SELECT log_data FROM log_fragments"),
        "hello\u{FFFD}",
        "the NUL arrives as U+FFFD"
    );
    let secret_bytes = "SELECT encode(ciphertext, 'hex') FROM secrets";
    let ciphertext: String = sqlite
        .query_row("SELECT hex(ciphertext) FROM secrets", [], |row| row.get(0))
        .expect("the secret");
    assert_eq!(cluster.sql("lab", secret_bytes).to_uppercase(), ciphertext);
    // New rows continue after the copied ones.
    let next_seq: i64 = cluster
        .sql(
            "lab",
            "INSERT INTO jobs (job_id, queue, state, priority, created_at, job_data)
             VALUES ('new', 'moved', 'waiting', 0, 0, '{}') RETURNING seq",
        )
        .lines()
        .next()
        .unwrap_or_default()
        .parse()
        .expect("a seq");
    let copied_max: i64 = sqlite
        .query_row("SELECT max(seq) FROM jobs", [], |row| row.get(0))
        .expect("max seq");
    assert!(next_seq > copied_max, "{next_seq} after {copied_max}");

    // A second copy into the same database is refused and changes nothing.
    let complaint = refusal(&migrate(lab.path(), &url));
    assert!(complaint.contains("already holds a lab"), "{complaint}");
    assert_eq!(cluster.sql("lab", "SELECT count(*) FROM jobs"), "3");
}

#[test]
fn migrating_a_running_lab_or_to_a_dead_database_is_refused_with_a_reason() {
    if skipped_on_postgres() {
        return;
    }
    let lab = tempfile::tempdir().expect("temp dir");
    let server = Server::start_in(lab.path(), &[]);
    server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "true"}}));
    // Nothing listens on port 1.
    let nowhere = "postgres://tf:hunter2@127.0.0.1:1/lab";
    let complaint = refusal(&migrate(lab.path(), nowhere));
    assert!(complaint.contains("stop tf serve"), "{complaint}");
    assert!(server.terminate());

    for url in [nowhere, "postgres://tf@127.0.0.1:1/lab?password=hunter2"] {
        let complaint = refusal(&migrate(lab.path(), url));
        assert!(
            complaint.contains("cannot use the PostgreSQL database postgres://tf@127.0.0.1:1/lab"),
            "{complaint}"
        );
        assert!(
            !complaint.contains("hunter2"),
            "the password is not printed: {complaint}"
        );
    }
}

#[test]
fn a_database_of_another_schema_version_is_not_copied() {
    if skipped_on_postgres() {
        return;
    }
    let lab = stopped_lab_with_an_artifact();
    // As a newer tf would leave it: its columns would be lost in the copy.
    let sqlite = rusqlite::Connection::open(lab.path().join("tf.db")).expect("open");
    let version: i64 = sqlite
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    sqlite
        .execute_batch(&format!(
            "ALTER TABLE jobs ADD COLUMN later TEXT; PRAGMA user_version = {};",
            version + 1
        ))
        .expect("a newer schema");
    drop(sqlite);

    let cluster = Postgres::start();
    let url = cluster.create_database("lab");
    let complaint = refusal(&migrate(lab.path(), &url));
    assert!(complaint.contains("schema version"), "{complaint}");
    assert_eq!(cluster.sql("lab", "SELECT count(*) FROM jobs"), "0");
}

#[test]
fn a_value_of_the_wrong_kind_is_refused_not_reinterpreted() {
    if skipped_on_postgres() {
        return;
    }
    let lab = stopped_lab_with_an_artifact();
    // SQLite keeps whatever a column is given; PostgreSQL's BIGINT must not get a REAL's bits.
    let sqlite = rusqlite::Connection::open(lab.path().join("tf.db")).expect("open");
    sqlite
        .execute("UPDATE jobs SET priority = 1.5", [])
        .expect("a REAL priority");
    drop(sqlite);

    let cluster = Postgres::start();
    let url = cluster.create_database("lab");
    let complaint = refusal(&migrate(lab.path(), &url));
    assert!(complaint.contains("copying jobs"), "{complaint}");
    assert!(
        complaint.contains("a real value cannot go into a int8 column"),
        "{complaint}"
    );
    assert_eq!(cluster.sql("lab", "SELECT count(*) FROM jobs"), "0");
}

#[test]
fn an_archive_already_missing_from_the_data_dir_is_named() {
    if skipped_on_postgres() {
        return;
    }
    let lab = stopped_lab_with_an_artifact();
    let sqlite = rusqlite::Connection::open(lab.path().join("tf.db")).expect("open");
    let lost: String = sqlite
        .query_row("SELECT file_name FROM blobs", [], |row| row.get(0))
        .expect("the artifact's file");
    std::fs::remove_file(lab.path().join("blobs").join(&lost)).expect("lose the archive");

    let cluster = Postgres::start();
    let url = cluster.create_database("lab");
    let moved = migrate(lab.path(), &url);
    let said = String::from_utf8_lossy(&moved.stdout);
    assert!(moved.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "Warning: 1 of them are missing there already (their downloads will fail): {lost}"
        )),
        "{said}"
    );
}

#[test]
fn the_moved_lab_is_served_from_postgres_with_its_history() {
    if skipped_on_postgres() {
        return;
    }
    let (lab, cluster, url) = moved_lab();

    // The harness's test agent logs in: clients and their secrets moved too.
    keep_records_in(lab.path(), &url);
    let server = Server::start_in(lab.path(), &[]);
    assert!(
        server
            .startup_log
            .contains("records in postgres://tf@127.0.0.1:"),
        "{}",
        server.startup_log
    );
    let id = cluster.sql("lab", "SELECT job_id FROM jobs");
    let artifact = server.get(&format!("/v1/result/{id}/artifact"));
    assert_eq!(artifact.status, 200);
    assert_eq!(artifact.body, b"results");
    let claimed = server
        .claim("agent-1", "q")
        .expect("the moved job is dispatched");
    assert_eq!(claimed["job_id"], id.as_str());
    assert_eq!(
        cluster.sql(
            "lab",
            &format!("SELECT state FROM jobs WHERE job_id = '{id}'")
        ),
        "running"
    );
}

#[test]
fn a_backup_on_postgres_holds_the_archives_and_keys_and_says_to_pg_dump_the_records() {
    if skipped_on_postgres() {
        return;
    }
    let (lab, cluster, url) = moved_lab();
    let archive: String = cluster.sql("lab", "SELECT file_name FROM blobs");
    let data_dir = lab.path().to_str().expect("utf-8");

    let destination = tempfile::tempdir().expect("temp dir");
    let backup_into = |name: &str| {
        let into = destination.path().join(name);
        let args = ["backup", "--data-dir", data_dir, "--database", &url];
        let output = tf(&[&args[..], &[into.to_str().expect("utf-8")]].concat());
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        let complaint = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{said}{complaint}");
        (into, said)
    };
    let (backup, said) = backup_into("backup");
    assert!(said.contains("Backed up 1 archives (7 bytes)"), "{said}");
    assert!(said.contains("back them up with pg_dump"), "{said}");
    assert_eq!(
        std::fs::read(backup.join("blobs").join(&archive)).expect("copied"),
        b"results"
    );
    assert!(backup.join("secrets.key").is_file() && !backup.join("tf.db").exists());

    // An archive the database points to that is gone from the data dir is named.
    std::fs::remove_file(lab.path().join("blobs").join(&archive)).expect("lose it");
    let (_, said) = backup_into("again");
    assert!(
        said.contains("1 archives the database points to are not in"),
        "{said}"
    );
    assert!(said.contains(&archive), "{said}");
}

#[test]
fn database_settings_that_cannot_work_stop_the_start_with_a_reason() {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().to_str().expect("utf-8");
    let serve = |extra: &[&str]| {
        let args = [
            &["serve", "--bind", "127.0.0.1:0", "--data-dir", data_dir][..],
            extra,
        ];
        refusal(&tf(&args.concat()))
    };
    let complaint = serve(&[
        "--database",
        "postgres://tf@127.0.0.1:1/lab",
        "--sync",
        "full",
    ]);
    assert!(
        complaint.contains("sync applies to SQLite only"),
        "{complaint}"
    );
    let complaint = serve(&["--database", "postgres://tf@[::1/lab"]);
    assert!(complaint.contains("not a PostgreSQL URL"), "{complaint}");
    let complaint = serve(&["--database", "postgres://tf:hunter2@127.0.0.1:1/lab"]);
    assert!(
        complaint.contains("postgres://tf@127.0.0.1:1/lab"),
        "{complaint}"
    );
    assert!(!complaint.contains("hunter2"), "{complaint}");
}

#[test]
fn a_database_that_goes_away_gets_503_and_the_server_reconnects_when_it_is_back() {
    let cluster = Postgres::start();
    let url = cluster.create_database("lab");
    let lab = tempfile::tempdir().expect("temp dir");
    keep_records_in(lab.path(), &url);
    let server = Server::start_in(lab.path(), &[]);
    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "true"}});
    let before = server.submit(&job);
    assert_eq!(server.get("/healthz").status, 200);

    cluster.stop();
    // A load balancer's health check sees it too, and stops sending requests here.
    let health = server.get("/healthz");
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.text().contains("the database"), "{}", health.text());
    let refused = server.post_json("/v1/job", &job);
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.text().contains("the database is unavailable"),
        "{}",
        refused.text()
    );
    let definition = server.get(&format!("/v1/job/{before}"));
    assert_eq!(definition.status, 503, "{}", definition.text());

    cluster.resume();
    let after = tf_test_support::wait::wait_for("the server reconnects", || {
        let answer = server.post_json("/v1/job", &job);
        (answer.status == 200)
            .then(|| answer.json()["job_id"].as_str().map(String::from))
            .flatten()
    });
    assert_ne!(after, before);
    assert_eq!(server.get(&format!("/v1/job/{before}")).status, 200);
    assert_eq!(server.get("/healthz").status, 200);
}
