use serde_json::{json, Value};

use tf_test_support::http::{send, Response};
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

fn fragment(number: i64, phase: &str, text: &str) -> Value {
    json!({"fragment_number": number, "timestamp": "2026-01-01T10:00:00", "phase": phase, "log_data": text})
}

fn post_batch(server: &Server, kind: &str, fragments: &Value) -> Response {
    server
        .agent()
        .post_json(&format!("/v1/result/{JOB}/log/{kind}/batch"), fragments)
}

fn output_of(server: &Server, phase: &str) -> Value {
    server
        .get(&format!("/v1/result/{JOB}/log/output?phase={phase}"))
        .json()["output"][phase]
        .clone()
}

#[test]
fn a_batch_of_fragments_is_stored_as_its_fragments_posted_one_by_one() {
    let server = Server::start();
    assert_eq!(
        post(&server, "output", 0, "setup", "2026-01-01T10:00:00", "a"),
        200
    );
    let batch = json!([
        fragment(1, "setup", "b"),
        fragment(3, "test", "d"),
        fragment(2, "test", "c"),
        // Resent numbers are stored once, the last copy winning, as for single posts.
        fragment(0, "setup", "a"),
        fragment(3, "test", "D"),
    ]);
    let stored = post_batch(&server, "output", &batch);
    assert_eq!((stored.status, stored.text()), (200, "OK".to_string()));
    assert_eq!(
        post(&server, "output", 4, "test", "2026-01-01T10:00:00", "e"),
        200
    );
    assert_eq!(
        output_of(&server, "setup"),
        json!({"last_fragment_number": 1, "log_data": "ab"})
    );
    assert_eq!(
        output_of(&server, "test"),
        json!({"last_fragment_number": 4, "log_data": "cDe"})
    );
    // The same batch again changes nothing.
    assert_eq!(post_batch(&server, "output", &batch).status, 200);
    assert_eq!(output_of(&server, "test")["log_data"], json!("cDe"));
}

#[test]
fn a_batch_with_one_bad_fragment_is_refused_whole_naming_it() {
    let server = Server::start();
    let batch = json!([
        fragment(0, "setup", "kept out"),
        fragment(1, "lunch", "x"),
        {"fragment_number": 2, "phase": "test", "log_data": "x"},
        "not a fragment",
    ]);
    let refused = post_batch(&server, "output", &batch);
    assert_eq!(refused.status, 422);
    let body = refused.json();
    assert_eq!(body["message"], json!("Validation error"));
    let detail = &body["detail"]["json"];
    assert_eq!(detail.as_object().unwrap().len(), 3, "{detail}");
    assert!(detail["1"]["phase"][0]
        .as_str()
        .unwrap()
        .starts_with("Must be one of"));
    assert_eq!(
        detail["2"]["timestamp"],
        json!(["Missing data for required field."])
    );
    assert_eq!(detail["3"]["_schema"], json!(["Invalid input type."]));
    assert_eq!(
        output_of(&server, "setup")["last_fragment_number"],
        json!(-1)
    );

    // What marshmallow coerces, single posts take, and so do batches.
    let coerced = json!([{"fragment_number": "5", "timestamp": "2026-01-01 10:00", "phase": "setup", "log_data": "x"}]);
    assert_eq!(post_batch(&server, "output", &coerced).status, 200);
    assert_eq!(
        output_of(&server, "setup")["last_fragment_number"],
        json!(5)
    );
}

#[test]
fn batches_are_bounded_and_checked_like_single_posts() {
    let server = Server::start();
    let not_a_list = post_batch(&server, "output", &fragment(0, "setup", "x"));
    assert_eq!(
        (
            not_a_list.status,
            not_a_list.json()["detail"]["json"].clone()
        ),
        (422, json!({"_schema": ["Not a valid list."]}))
    );
    let empty = post_batch(&server, "output", &json!([]));
    assert_eq!(empty.status, 422);
    let too_many: Vec<Value> = (0..1001).map(|n| fragment(n, "test", "x")).collect();
    let refused = post_batch(&server, "output", &json!(too_many));
    assert_eq!(refused.status, 413);
    assert_eq!(
        refused.json()["message"],
        json!("A batch holds at most 1000 fragments, this one has 1001")
    );
    let most: Vec<Value> = (0..1000).map(|n| fragment(n, "test", "x")).collect();
    assert_eq!(post_batch(&server, "output", &json!(most)).status, 200);
    assert_eq!(
        output_of(&server, "test")["last_fragment_number"],
        json!(999)
    );

    let batch = json!([fragment(0, "setup", "x")]);
    assert_eq!(post_batch(&server, "console", &batch).status, 404);
    let bad_id = server
        .agent()
        .post_json("/v1/result/nope/log/output/batch", &batch);
    assert_eq!(
        (bad_id.status, bad_id.json()["message"].clone()),
        (400, json!("Invalid job_id specified"))
    );
    let malformed = server.agent().post_raw(
        &format!("/v1/result/{JOB}/log/output/batch"),
        "application/json",
        b"[{",
    );
    assert_eq!(malformed.status, 400);
    let small = Server::start_with(&["--max-body-size", "1000"]);
    let big: Vec<Value> = (0..20)
        .map(|n| fragment(n, "test", &"x".repeat(100)))
        .collect();
    assert_eq!(post_batch(&small, "output", &json!(big)).status, 413);
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
