use serde_json::json;

use tf_test_support::server::Server;

fn fragment(number: i64, phase: &str, text: &str) -> serde_json::Value {
    json!({"fragment_number": number, "timestamp": "2026-01-01T00:00:00", "phase": phase, "log_data": text})
}

#[test]
fn results_combine_state_status_device_info_and_logs() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "q"}));
    server.claim("a", "q");
    let post =
        |body: serde_json::Value| server.agent().post_json(&format!("/v1/result/{id}"), &body);
    assert_eq!(
        post(json!({"job_state": "provision", "device_info": {"device_ip": "1.2.3.4"}})).text(),
        "OK"
    );
    assert_eq!(
        post(json!({"status": {"setup": 0, "provision": "1"}})).status,
        200
    );
    assert_eq!(
        post(json!({"status": {"test": 3}})).status,
        200,
        "a new status map replaces the old one"
    );
    for (n, phase, kind, text) in [
        (0, "setup", "output", "hello\n"),
        (1, "setup", "output", "world\n"),
        (0, "provision", "serial", "ser\n"),
        (2, "test", "output", "ok\n"),
    ] {
        let response = server.agent().post_json(
            &format!("/v1/result/{id}/log/{kind}"),
            &fragment(n, phase, text),
        );
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(
        server.get(&format!("/v1/result/{id}")).json(),
        json!({
            "job_state": "provision", "device_info": {"device_ip": "1.2.3.4"},
            "test_status": 3, "setup_output": "hello\nworld\n", "provision_serial": "ser\n", "test_output": "ok\n"
        })
    );
}

#[test]
fn result_posts_are_validated_and_unknown_jobs_ignored() {
    let server = Server::start();
    let unknown = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    assert_eq!(
        server
            .agent()
            .post_json(&format!("/v1/result/{unknown}"), &json!({"job_state": "x"}))
            .text(),
        "OK"
    );
    assert_eq!(server.get(&format!("/v1/result/{unknown}")).status, 204);

    let bad_phase = server.agent().post_json(
        &format!("/v1/result/{unknown}"),
        &json!({"status": {"foo": 1}}),
    );
    assert_eq!(bad_phase.status, 422);
    assert!(
        bad_phase.json()["detail"]["json"]["status"]["foo"]["key"][0]
            .as_str()
            .unwrap()
            .starts_with("Must be one of:")
    );
    // Other keys are an old agent's result document (tests/server/legacy.rs), whose
    // exit codes must be numbers.
    let bad_code = server.agent().post_json(
        &format!("/v1/result/{unknown}"),
        &json!({"test_status": "failed", "bogus": 1}),
    );
    assert_eq!(
        (bad_code.status, bad_code.json()["detail"].clone()),
        (
            422,
            json!({"json": {"test_status": ["Not a valid integer."]}})
        )
    );
    let bad_id = server
        .agent()
        .post_json("/v1/result/xyz", &json!({"job_state": "x"}));
    assert_eq!(
        (bad_id.status, bad_id.json()["message"].clone()),
        (400, json!("Invalid job_id specified"))
    );
}

#[test]
fn a_result_post_can_requeue_a_job() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "q"}));
    server.claim("a", "q");
    server.agent().post_json(
        &format!("/v1/result/{id}"),
        &json!({"job_state": "waiting"}),
    );
    assert_eq!(server.claim("b", "q").unwrap()["job_id"], json!(id));
}

#[test]
fn a_requeued_job_no_longer_names_the_agent_that_gave_it_back() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "q"}));
    server.claim("first-agent", "q");
    let page = || {
        let response = server.get(&format!("/jobs/{id}"));
        assert_eq!(response.status, 200, "{}", response.text());
        let page = response.text();
        assert!(page.contains(&id), "{page}");
        page
    };
    assert!(page().contains("first-agent"));
    server.agent().post_json(
        &format!("/v1/result/{id}"),
        &json!({"job_state": "waiting"}),
    );
    assert!(!page().contains("first-agent"), "{}", page());
    server.claim("second-agent", "q");
    assert!(page().contains("second-agent"));
}

#[test]
fn a_phase_report_racing_a_cancel_does_not_undo_it() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "q"}));
    server.claim("a", "q");
    let cancel = server.post_json(
        &format!("/v1/job/{id}/action"),
        &json!({"action": "cancel"}),
    );
    assert_eq!(cancel.status, 200);
    let state = |body: serde_json::Value| {
        server.agent().post_json(&format!("/v1/result/{id}"), &body);
        server.get(&format!("/v1/result/{id}")).json()["job_state"].clone()
    };
    assert_eq!(state(json!({"job_state": "test"})), json!("cancelled"));
    // The agent's final report still ends it, as with the reference.
    assert_eq!(state(json!({"job_state": "complete"})), json!("complete"));
}

/// Submits a job, lets agent `a` take it, and applies the agent's `reports` in order.
fn run_with_reports(server: &Server, reports: &[serde_json::Value]) -> String {
    let id = server.submit(&json!({"job_queue": "q"}));
    server.claim("a", "q");
    for report in reports {
        let path = if report.get("fragment_number").is_some() {
            format!("/v1/result/{id}/log/output")
        } else {
            format!("/v1/result/{id}")
        };
        assert_eq!(server.agent().post_json(&path, report).status, 200);
    }
    id
}

fn outcome_of(server: &Server, id: &str) -> Option<serde_json::Value> {
    let result = server.get(&format!("/v1/result/{id}")).json();
    let cheap = server.get(&format!("/v1/result/{id}?logs=false")).json();
    assert_eq!(result.get("outcome"), cheap.get("outcome"), "{id}");
    result.get("outcome").cloned()
}

#[test]
fn finished_jobs_have_an_outcome_and_unfinished_ones_none() {
    let server = Server::start();
    let complete = |status: serde_json::Value| json!({"job_state": "complete", "status": status});
    let cases = [
        (
            vec![complete(json!({"setup": 0, "test": 0, "cleanup": 0}))],
            Some(json!({"result": "passed"})),
        ),
        (
            vec![
                json!({"job_state": "test", "status": {"setup": 0}}),
                complete(json!({"setup": 0, "test": 1, "cleanup": 0})),
            ],
            Some(json!({"result": "failed", "phase": "test", "exit_code": 1})),
        ),
        (
            vec![complete(json!({"setup": 0, "provision": 2, "cleanup": 0}))],
            Some(json!({"result": "infrastructure_failure", "phase": "provision", "exit_code": 2})),
        ),
        // Killed after the agent wrote its timeout line, with output after it.
        (
            vec![
                fragment(0, "test", "begin\n"),
                fragment(1, "test", "\nERROR: Output timeout reached! (5s)\n"),
                fragment(2, "test", "trailing\n"),
                fragment(3, "cleanup", "cleaned\n"),
                complete(json!({"test": 247, "cleanup": 0})),
            ],
            Some(json!({"result": "timed_out", "phase": "test", "timeout": "output"})),
        ),
        // Killed without one (the agent was stopped): a plain failure with the code.
        (
            vec![
                fragment(0, "test", "begin\n"),
                complete(json!({"test": 247})),
            ],
            Some(json!({"result": "failed", "phase": "test", "exit_code": 247})),
        ),
        (vec![json!({"job_state": "test"})], None),
    ];
    for (reports, expected) in cases {
        let id = run_with_reports(&server, &reports);
        assert_eq!(outcome_of(&server, &id), expected, "{reports:?}");
    }
    let waiting = server.submit(&json!({"job_queue": "other"}));
    assert_eq!(outcome_of(&server, &waiting), None);
}

#[test]
fn a_cancelled_job_stays_cancelled_in_its_outcome_after_its_agent_ends_it() {
    let server = Server::start();
    let waiting = server.submit(&json!({"job_queue": "other"}));
    let id = run_with_reports(&server, &[json!({"job_state": "test"})]);
    for job in [&waiting, &id] {
        let cancel = server.post_json(
            &format!("/v1/job/{job}/action"),
            &json!({"action": "cancel"}),
        );
        assert_eq!(cancel.status, 200);
        assert_eq!(
            outcome_of(&server, job),
            Some(json!({"result": "cancelled"}))
        );
    }
    // The agent kills the test and ends the job `complete`, as the reference does; a
    // resent final report changes nothing.
    for _ in 0..2 {
        server.agent().post_json(
            &format!("/v1/result/{id}"),
            &json!({"job_state": "complete", "status": {"test": 247, "cleanup": 0}}),
        );
        let result = server.get(&format!("/v1/result/{id}")).json();
        assert_eq!(result["job_state"], json!("complete"));
        assert_eq!(result["outcome"], json!({"result": "cancelled"}));
    }
}

#[test]
fn artifacts_upload_replace_and_download() {
    let server = Server::start();
    let agent = server.agent();
    let id = server.submit(&json!({"job_queue": "q"}));
    assert_eq!(server.get(&format!("/v1/result/{id}/artifact")).status, 204);
    assert_eq!(
        agent
            .upload(&format!("/v1/result/{id}/artifact"), "file", b"first")
            .text(),
        "OK"
    );
    let second = vec![7u8; 3 << 20];
    assert_eq!(
        agent
            .upload(&format!("/v1/result/{id}/artifact"), "file", &second)
            .status,
        200
    );
    let download = server.get(&format!("/v1/result/{id}/artifact"));
    assert_eq!(download.status, 200);
    assert_eq!(
        download.header("content-disposition"),
        Some("inline; filename=artifact.tar.gz")
    );
    assert_eq!(download.header("content-type"), Some("application/gzip"));
    assert_eq!(download.header("content-encoding"), None);
    assert_eq!(download.body, second, "the latest upload wins");
    let blob_files = std::fs::read_dir(server.data_dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != ".store-id")
        .count();
    assert_eq!(blob_files, 1, "the replaced archive's file is deleted");

    assert_eq!(
        agent
            .upload(&format!("/v1/result/{id}/artifact"), "nope", b"x")
            .status,
        400
    );
    let not_multipart = agent.post_raw(&format!("/v1/result/{id}/artifact"), "text/plain", b"x");
    assert_eq!(
        not_multipart.json(),
        json!({"detail": {}, "message": "Bad Request"})
    );
    let bad_id = server.get("/v1/result/zz/artifact");
    assert_eq!(
        (bad_id.status, bad_id.text()),
        (400, "Invalid job id\n".to_string())
    );
}

#[test]
fn artifacts_of_unknown_jobs_are_404_and_nothing_is_kept() {
    let server = Server::start();
    let unknown = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let path = format!("/v1/result/{unknown}/artifact");
    let upload = server.agent().upload(&path, "file", b"for nobody");
    assert_eq!(upload.status, 404, "{}", upload.text());
    assert_eq!(upload.json()["message"], json!("Job not found"));
    // What the reference answers, and its CLI words as "No artifacts tarball found".
    assert_eq!(server.get(&path).status, 204);
    let kept: Vec<_> = std::fs::read_dir(server.data_dir.join("blobs"))
        .unwrap()
        .chain(std::fs::read_dir(server.data_dir.join("blobs/incoming")).unwrap())
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != ".store-id")
        .map(|e| e.file_name())
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
}

#[test]
fn events_are_relayed_only_to_the_configured_webhook() {
    let webhook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let webhook_url = format!("http://{}", webhook.local_addr().unwrap());
    let received = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = webhook.accept().unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\"events\"") {
            let n = stream.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..n]);
        }
        stream
            .write_all(
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 6\r\nConnection: close\r\n\r\nthanks",
            )
            .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let server = Server::start_with(&["--webhook-url", &webhook_url, "--webhook-auth", "sekrit"]);
    let id = server.submit(&json!({"job_queue": "q"}));
    let event = json!({
        "job_status_webhook": format!("{webhook_url}/hook/path"), "agent_id": "a1", "job_queue": "q",
        "events": [{"event_name": "setup_start", "timestamp": "now", "detail": ""}]
    });
    let relayed = server
        .agent()
        .post_json(&format!("/v1/job/{id}/events"), &event);
    assert_eq!(
        (relayed.status, relayed.text()),
        (202, "thanks".to_string())
    );
    let request = received.join().unwrap();
    assert!(request.starts_with("PUT /hook/path HTTP/1.1"), "{request}");
    assert!(
        request
            .to_lowercase()
            .contains("authorization: bearer sekrit"),
        "{request}"
    );
    assert!(
        !request.contains("job_status_webhook"),
        "the target URL is not forwarded"
    );

    let elsewhere = json!({"job_status_webhook": "http://example.com/hook", "events": []});
    let refused = server
        .agent()
        .post_json(&format!("/v1/job/{id}/events"), &elsewhere);
    assert_eq!(
        (refused.status, refused.json()["message"].clone()),
        (403, json!("Invalid job_status_webhook URL specified"))
    );
    let unknown = server.agent().post_json(
        "/v1/job/aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/events",
        &elsewhere,
    );
    assert_eq!(
        (unknown.status, unknown.json()["message"].clone()),
        (404, json!("Job not found"))
    );

    let unconfigured = Server::start();
    let id = unconfigured.submit(&json!({"job_queue": "q"}));
    let response = unconfigured
        .agent()
        .post_json(&format!("/v1/job/{id}/events"), &elsewhere);
    assert_eq!(
        (response.status, response.json()["message"].clone()),
        (500, json!("Webhook URL not configured"))
    );
}

#[test]
fn webhook_failures_map_to_the_reference_errors() {
    // A webhook that refuses our token.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let server = Server::start_with(&["--webhook-url", &url]);
    let id = server.submit(&json!({"job_queue": "q"}));
    let event = |target: &str| json!({"job_status_webhook": target, "events": [{"event_name": "job_start", "timestamp": "t"}]});
    let refused = server
        .agent()
        .post_json(&format!("/v1/job/{id}/events"), &event(&format!("{url}/x")));
    assert_eq!(
        (refused.status, refused.json()["message"].clone()),
        (500, json!("Webhook authentication failed"))
    );

    // A webhook origin where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::start_with(&["--webhook-url", &dead_url]);
    let id = server.submit(&json!({"job_queue": "q"}));
    let unreachable = server.agent().post_json(
        &format!("/v1/job/{id}/events"),
        &event(&format!("{dead_url}/x")),
    );
    assert_eq!(
        (unreachable.status, unreachable.json()["message"].clone()),
        (502, json!("Webhook unreachable"))
    );
    let missing = server
        .agent()
        .post_json(&format!("/v1/job/{id}/events"), &json!({"events": []}));
    assert_eq!(
        missing.json()["detail"]["json"]["job_status_webhook"],
        json!(["Missing data for required field."])
    );
    let bad_id = server
        .agent()
        .post_json("/v1/job/nope/events", &event(&format!("{dead_url}/x")));
    assert_eq!(bad_id.status, 400);
}
