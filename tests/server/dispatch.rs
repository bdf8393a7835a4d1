//! Empty polls are answered without the writer (store/claimable.rs): these prove that a
//! job is never hidden from the agents by it, whatever way it became claimable.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use tf_test_support::http::send;
use tf_test_support::server::Server;

#[test]
fn jobs_waiting_at_a_crash_are_claimed_after_the_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let plain = server.submit(&json!({"job_queue": "before"}));
    let awaiting = server.submit(
        &json!({"job_queue": "archive", "test_data": {"attachments": [{"agent": "a.txt"}]}}),
    );
    assert_eq!(server.claim("a", "empty"), None);
    server.kill();

    let restarted = Server::start_in(data.path(), &[]);
    assert_eq!(
        restarted.claim("a", "before").unwrap()["job_id"],
        json!(plain)
    );
    assert_eq!(restarted.claim("a", "before"), None);
    assert_eq!(
        restarted.claim("a", "archive"),
        None,
        "its archive is missing"
    );
    let uploaded = restarted.upload(&format!("/v1/job/{awaiting}/attachments"), "file", b"x");
    assert_eq!(uploaded.status, 200, "{}", uploaded.text());
    assert_eq!(
        restarted.claim("a", "archive").unwrap()["job_id"],
        json!(awaiting)
    );
}

#[test]
fn a_job_given_back_to_its_queue_is_claimed_again() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "q"}));
    assert_eq!(server.claim("first", "q").unwrap()["job_id"], json!(id));
    // An empty poll now leaves the queue known to be empty.
    assert_eq!(server.claim("first", "q"), None);
    let requeued = server.agent().post_json(
        &format!("/v1/result/{id}"),
        &json!({"job_state": "waiting"}),
    );
    assert_eq!(requeued.status, 200, "{}", requeued.text());
    assert_eq!(server.claim("second", "q").unwrap()["job_id"], json!(id));
}

#[test]
fn jobs_submitted_while_agents_poll_are_each_claimed_once_and_none_is_left() {
    const JOBS: usize = 600;
    const POLLERS: usize = 8;
    let server = Server::start();
    let submitted = Arc::new(AtomicBool::new(false));
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let claimed_count = Arc::new(AtomicUsize::new(0));
    // The pollers start first: most of their polls find the queue empty, so the view is
    // unmarked and marked again all the time while jobs arrive.
    let pollers: Vec<_> = (0..POLLERS)
        .map(|n| {
            let agent = server.agent();
            let (submitted, claimed, count) =
                (submitted.clone(), claimed.clone(), claimed_count.clone());
            std::thread::spawn(move || {
                let cookie = format!("agent_name=poller-{n}");
                let mut empty_after_submits = 0;
                while count.load(Ordering::SeqCst) < JOBS && empty_after_submits < 200 {
                    let response =
                        agent.request("GET", "/v1/job?queue=live", &[("Cookie", &cookie)], b"");
                    match response.status {
                        200 => {
                            let id = response.json()["job_id"].as_str().unwrap().to_string();
                            claimed.lock().unwrap().push(id);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        204 if submitted.load(Ordering::SeqCst) => empty_after_submits += 1,
                        204 => {}
                        other => panic!("claim answered {other}"),
                    }
                }
            })
        })
        .collect();
    let submitters: Vec<_> = (0..3)
        .map(|_| {
            let address = server.address.clone();
            std::thread::spawn(move || {
                (0..JOBS / 3)
                    .map(|_| {
                        let body = json!({"job_queue": "live"}).to_string();
                        let json = [("Content-Type", "application/json")];
                        let response =
                            send(&address, "POST", "/v1/job", &json, body.as_bytes()).unwrap();
                        assert_eq!(response.status, 200, "{}", response.text());
                        response.json()["job_id"].as_str().unwrap().to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<String> = submitters
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    submitted.store(true, Ordering::SeqCst);
    pollers.into_iter().for_each(|t| t.join().unwrap());

    let mut claimed = claimed.lock().unwrap().clone();
    claimed.sort();
    ids.sort();
    assert_eq!(claimed.len(), JOBS, "jobs left waiting or claimed twice");
    assert_eq!(claimed, ids);
}
