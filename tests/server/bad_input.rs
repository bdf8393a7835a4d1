use serde_json::json;

use crate::harness::Server;

#[test]
fn malformed_and_mistyped_bodies_are_rejected_cleanly() {
    let server = Server::start();
    let bad_json = server.post_raw("/v1/job", "application/json", b"{\"job_queue\": ");
    assert_eq!(
        (bad_json.status, bad_json.json()),
        (400, json!({"detail": {}, "message": "Bad Request"}))
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
    let binary = server.post_raw("/v1/agents/data/x", "application/json", &[0xff, 0xfe, 0x00]);
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
    let id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let big_upload = server.upload(&format!("/v1/result/{id}/artifact"), "file", &[1u8; 4096]);
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
