use serde_json::json;

use tf_test_support::server::Server;

#[test]
fn malformed_and_mistyped_bodies_are_rejected_cleanly() {
    let server = Server::start();
    let bad_json = server.post_raw("/v1/job", "application/json", b"{\"job_queue\": ");
    assert_eq!(
        (bad_json.status, bad_json.json()),
        (400, json!({"detail": {}, "message": "Bad Request"}))
    );
    let blank = server
        .agent()
        .post_raw("/v1/agents/images", "application/json", b" \n");
    assert_eq!(
        (blank.status, blank.json()["message"].clone()),
        (400, json!("Bad Request"))
    );
    let empty = server.post_raw("/v1/job", "application/json", b"");
    assert_eq!(
        empty.json()["detail"]["json"],
        json!({"job_queue": ["Missing data for required field."]})
    );
    let not_object = server.post_json("/v1/job", &json!("job"));
    assert_eq!(not_object.status, 422);
    let wrong_types = server.post_json(
        "/v1/job",
        &json!({"job_queue": 5, "tags": [1], "debug": "maybe", "reserve_data": {"ssh_keys": ["bob"], "timeout": "30x"}}),
    );
    assert_eq!(wrong_types.status, 422);
    assert_eq!(
        wrong_types.json()["detail"]["json"],
        json!({
            "job_queue": ["Not a valid string."],
            "tags": {"0": ["Not a valid string."]},
            "debug": ["Not a valid boolean."],
            "reserve_data": {"ssh_keys": {"0": ["String does not match expected pattern."]}, "timeout": ["Invalid duration format: Invalid duration '30x'"]}
        })
    );
    let binary =
        server
            .agent()
            .post_raw("/v1/agents/data/x", "application/json", &[0xff, 0xfe, 0x00]);
    assert_eq!(binary.status, 400);
}

#[test]
fn bodies_over_the_limit_get_413() {
    let server = Server::start_with(&["--max-body-size", "1024", "--max-upload-size", "2048"]);
    let padding = "x".repeat(4096);
    let big = server.post_json("/v1/job", &json!({"job_queue": "q", "name": padding}));
    assert_eq!(
        (big.status, big.json()["message"].clone()),
        (413, json!("Payload too large"))
    );
    let id = server.submit(&json!({"job_queue": "q"}));
    let big_upload =
        server
            .agent()
            .upload(&format!("/v1/result/{id}/artifact"), "file", &[1u8; 4096]);
    assert_eq!(big_upload.status, 413);
    assert_eq!(
        server.get(&format!("/v1/result/{id}/artifact")).status,
        204,
        "nothing partial is kept"
    );
    let incoming = server.data_dir.join("blobs/incoming");
    assert_eq!(
        std::fs::read_dir(incoming).unwrap().count(),
        0,
        "the partial upload was deleted"
    );
    assert_eq!(
        server
            .agent()
            .upload(&format!("/v1/result/{id}/artifact"), "file", &[1u8; 1024])
            .status,
        200
    );
}

#[test]
fn unknown_urls_and_methods() {
    let server = Server::start();
    let unknown = server.get("/v2/anything");
    assert_eq!(unknown.status, 404);
    assert!(unknown.text().starts_with("Not found: 404 Not Found"));
    let oidc = server.post_json("/oidc/auth-init", &json!({}));
    assert_eq!(
        oidc.status, 404,
        "the reference CLI reads 404 as 'continue anonymously'"
    );
    let method = server.request("PUT", "/v1/job", &[], b"");
    assert_eq!(
        (method.status, method.json()),
        (405, json!({"detail": {}, "message": "Method Not Allowed"}))
    );
}

#[test]
fn garbage_on_the_socket_does_not_hurt_the_server() {
    use std::io::{Read, Write};
    let server = Server::start();
    let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
    stream
        .write_all(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(server.get("/v1/").status, 200);
}

#[test]
fn non_ascii_and_odd_values_are_refused_not_crashed_on() {
    let server = Server::start();
    let job = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    let fragment = json!({"fragment_number": 0, "timestamp": "202é01-01T00:00", "phase": "setup", "log_data": "x"});
    let refused = server
        .agent()
        .post_json(&format!("/v1/result/{job}/log/output"), &fragment);
    assert_eq!(
        refused.json()["detail"]["json"]["timestamp"],
        json!(["Not a valid datetime."])
    );
    let query = server.get(&format!(
        "/v1/result/{job}/log/output?start_timestamp=202%C3%A901-01T00:00"
    ));
    assert_eq!(
        query.json()["message"],
        json!({"start_timestamp": ["Not a valid datetime."]})
    );
    assert_eq!(
        server
            .get(&format!("/v1/result/{job}/log/output?start_fragment=abc"))
            .json()["message"],
        json!({"start_fragment": ["Not a valid integer."]})
    );
    assert_eq!(
        server.get("/v1/result/bad/log/output?foo=1").json()["message"],
        json!({"foo": ["Unknown field."]}),
        "query errors win over the id check"
    );

    let odd_name = server
        .agent()
        .post_json("/v1/agents/data/a%3Bb", &json!({"state": "waiting"}));
    assert_eq!(
        odd_name.status, 400,
        "a name that would break the cookie is refused"
    );
    assert_eq!(server.get("/v1/agents/data").json(), json!([]));

    let huge_url = format!("http://example.com/{}", "x".repeat(100_000));
    let response = server.post_json(
        "/v1/job",
        &json!({"job_queue": "q", "provision_data": {"url": huge_url}}),
    );
    assert_eq!(response.status, 422);
    assert_eq!(server.get(&format!("/v1/job/{job}/position")).status, 410);
}

#[test]
fn a_claim_names_a_bounded_number_of_queues() {
    let server = Server::start();
    let id = server.submit(&json!({"job_queue": "q"}));
    let repeated = server.agent().request(
        "GET",
        "/v1/job?queue=q&queue=q&queue=other",
        &[("Cookie", "agent_name=a")],
        b"",
    );
    assert_eq!(repeated.json()["job_id"], json!(id));
    let many: String = (0..65).map(|n| format!("queue=q{n}&")).collect();
    let refused = server.agent().request(
        "GET",
        &format!("/v1/job?{many}"),
        &[("Cookie", "agent_name=a")],
        b"",
    );
    assert_eq!(refused.status, 400);
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("Too many queues"));
}

#[test]
fn clients_hanging_up_mid_request_do_not_exhaust_the_server() {
    use std::io::Write;
    let server = Server::start();
    for _ in 0..300 {
        server.submit(&json!({"job_queue": "q", "tags": ["t"]}));
    }
    for _ in 0..40 {
        let mut stream = std::net::TcpStream::connect(&server.address).unwrap();
        let request = "GET /v1/job/search?tags=t HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(request.as_bytes()).unwrap();
        drop(stream);
        let mut upload = std::net::TcpStream::connect(&server.address).unwrap();
        let head = "POST /v1/result/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/artifact HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\npartial";
        upload.write_all(head.as_bytes()).unwrap();
    }
    for _ in 0..10 {
        let search = server.get("/v1/job/search?tags=t");
        assert_eq!(search.status, 200, "{}", search.text());
        assert_eq!(search.json().as_array().unwrap().len(), 300);
    }
}
