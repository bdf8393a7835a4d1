use serde_json::json;

use tf_test_support::http::send;
use tf_test_support::server::Server;

const JOB: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn post(server: &Server, kind: &str, number: i64, phase: &str, timestamp: &str, text: &str) -> u16 {
    let body = json!({"fragment_number": number, "timestamp": timestamp, "phase": phase, "log_data": text});
    server
        .agent()
        .post_json(&format!("/v1/result/{JOB}/log/{kind}"), &body)
        .status
}

#[test]
fn fragments_are_read_back_per_phase_with_filters() {
    let server = Server::start();
    assert_eq!(
        post(&server, "output", 0, "setup", "2026-01-01T10:00:00Z", "a"),
        200
    );
    assert_eq!(
        post(&server, "output", 2, "test", "2026-01-01T10:02:00", "c"),
        200
    );
    assert_eq!(
        post(
            &server,
            "output",
            1,
            "setup",
            "2026-01-01T10:01:00+00:00",
            "b"
        ),
        200
    );
    assert_eq!(
        post(&server, "serial", 0, "test", "2026-01-01T10:00:00", "s"),
        200
    );

    let all = server.get(&format!("/v1/result/{JOB}/log/output")).json();
    assert_eq!(
        all["output"]["setup"],
        json!({"last_fragment_number": 1, "log_data": "ab"})
    );
    assert_eq!(
        all["output"]["test"],
        json!({"last_fragment_number": 2, "log_data": "c"})
    );
    assert_eq!(
        all["output"]["provision"],
        json!({"last_fragment_number": -1, "log_data": ""})
    );
    assert_eq!(all["output"].as_object().unwrap().len(), 7);

    let later = server
        .get(&format!("/v1/result/{JOB}/log/output?start_fragment=1"))
        .json();
    assert_eq!(later["output"]["setup"]["log_data"], json!("b"));
    let by_time = server
        .get(&format!(
            "/v1/result/{JOB}/log/output?start_timestamp=2026-01-01T10:01:00"
        ))
        .json();
    assert_eq!(by_time["output"]["setup"]["log_data"], json!("b"));
    assert_eq!(by_time["output"]["test"]["log_data"], json!("c"));
    let one_phase = server
        .get(&format!("/v1/result/{JOB}/log/serial?phase=test"))
        .json();
    assert_eq!(
        one_phase,
        json!({"serial": {"test": {"last_fragment_number": 0, "log_data": "s"}}})
    );
}

#[test]
fn a_resent_fragment_is_stored_once() {
    let server = Server::start();
    for _ in 0..3 {
        assert_eq!(
            post(
                &server,
                "output",
                0,
                "setup",
                "2026-01-01T10:00:00",
                "once\n"
            ),
            200
        );
    }
    let log = server
        .get(&format!("/v1/result/{JOB}/log/output?phase=setup"))
        .json();
    assert_eq!(log["output"]["setup"]["log_data"], json!("once\n"));
}

#[test]
fn bad_log_requests_get_the_reference_errors() {
    let server = Server::start();
    let bad_query = |query: &str| server.get(&format!("/v1/result/{JOB}/log/output?{query}"));
    let negative = bad_query("start_fragment=-1");
    assert_eq!(negative.status, 400);
    assert_eq!(
        negative.json(),
        json!({"detail": {}, "message": {"start_fragment": ["Must be greater than or equal to 0."]}})
    );
    assert_eq!(
        bad_query("foo=1").json()["message"],
        json!({"foo": ["Unknown field."]})
    );
    assert_eq!(bad_query("start_timestamp=yesterday").status, 400);
    assert_eq!(bad_query("phase=lunch").status, 400);
    let bad_id = server.get("/v1/result/nope/log/output");
    assert_eq!(
        (bad_id.status, bad_id.json()),
        (400, json!({"detail": {}, "message": "Invalid job id\n"}))
    );
    assert_eq!(
        server.get(&format!("/v1/result/{JOB}/log/console")).status,
        404
    );
    assert_eq!(
        post(&server, "console", 0, "setup", "2026-01-01T10:00:00", "x"),
        404
    );

    let missing = server.agent().post_json(
        &format!("/v1/result/{JOB}/log/output"),
        &json!({"log_data": "x"}),
    );
    assert_eq!(missing.status, 422);
    let detail = &missing.json()["detail"]["json"];
    for field in ["fragment_number", "timestamp", "phase"] {
        assert_eq!(
            detail[field],
            json!(["Missing data for required field."]),
            "{field}"
        );
    }
    assert_eq!(
        post(&server, "output", 0, "setup", "2026-01-01", "x"),
        422,
        "a date alone is not a timestamp"
    );
    assert_eq!(
        post(&server, "output", 0, "lunch", "2026-01-01T00:00", "x"),
        422
    );
}

#[test]
fn long_poll_on_a_log_returns_when_a_fragment_arrives() {
    let server = Server::start();
    let address = server.address.clone();
    let waiter = std::thread::spawn(move || {
        let path = format!("/v1/result/{JOB}/log/output?start_fragment=0&wait=30");
        send(&address, "GET", &path, &[], b"").unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    post(
        &server,
        "output",
        0,
        "setup",
        "2026-01-01T10:00:00",
        "live!\n",
    );
    let response = waiter.join().unwrap();
    assert_eq!(
        response.json()["output"]["setup"]["log_data"],
        json!("live!\n")
    );
}
