use std::time::Duration;

use serde_json::json;

use tf_test_support::server::Server;
use tf_test_support::wait::eventually;

#[test]
fn old_jobs_logs_archives_and_agents_expire() {
    let server = Server::start_with(&["--retention", "3s"]);
    let id = server.submit(&json!({"job_queue": "q"}));
    assert_eq!(server.get(&format!("/v1/job/{id}")).status, 200);
    // More fragments than one expiry batch deletes.
    let posters: Vec<_> = (0..4)
        .map(|thread| {
            let (agent, id) = (server.agent(), id.clone());
            std::thread::spawn(move || {
                for n in 0..1300 {
                    let fragment = json!({"fragment_number": thread * 10_000 + n, "timestamp": "2026-01-01T00:00:00", "phase": "setup", "log_data": "old"});
                    let path = format!("/v1/result/{id}/log/output");
                    let body = fragment.to_string();
                    agent.post_raw(&path, "application/json", body.as_bytes());
                }
            })
        })
        .collect();
    posters.into_iter().for_each(|t| t.join().unwrap());
    server
        .agent()
        .upload(&format!("/v1/result/{id}/artifact"), "file", b"old archive");
    server
        .agent()
        .post_json("/v1/agents/data/old-agent", &json!({"queues": ["q"]}));
    server.claim("old-agent", "q");

    assert!(
        eventually(|| server.get(&format!("/v1/job/{id}")).status == 204),
        "the job never expired"
    );
    assert!(eventually(|| server
        .get(&format!("/v1/result/{id}/artifact"))
        .status
        == 204));
    assert!(eventually(|| server
        .get("/v1/agents/data/old-agent")
        .status
        == 404));
    assert!(eventually(
        || server.get("/v1/queues/wait_times").json() == json!({})
    ));
    let log = server.get(&format!("/v1/result/{id}/log/output")).json();
    assert_eq!(log["output"]["setup"]["last_fragment_number"], json!(-1));
    let blobs = std::fs::read_dir(server.data_dir.join("blobs")).unwrap();
    // Only the file naming the database that owns the directory is left.
    let files: Vec<_> = blobs
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(files, [".store-id"], "the archive file is gone");
}

#[test]
fn fresh_data_is_kept() {
    let server = Server::start_with(&["--retention", "1h"]);
    let id = server.submit(&json!({"job_queue": "q"}));
    let fragment = json!({"fragment_number": 0, "timestamp": "2026-01-01T00:00:00", "phase": "setup", "log_data": "new"});
    server
        .agent()
        .post_json(&format!("/v1/result/{id}/log/output"), &fragment);
    // The expiry pass also runs at start-up; give it a moment, then everything is still there.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.get(&format!("/v1/job/{id}")).status, 200);
    assert_eq!(
        server.get(&format!("/v1/result/{id}/log/output")).json()["output"]["setup"]["log_data"],
        json!("new")
    );
}

#[test]
fn jobs_expire_when_no_log_was_ever_written() {
    let server = Server::start_with(&["--retention", "1s"]);
    let id = server.submit(&json!({"job_queue": "q"}));
    assert!(
        eventually(|| server.get(&format!("/v1/job/{id}")).status == 204),
        "the job never expired"
    );
}
