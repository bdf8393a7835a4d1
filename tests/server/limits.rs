//! Work per request is bounded: JSON bodies are parsed within limits on nesting, values
//! and string length, big ones off the async workers, and error answers stay short.

use std::time::Duration;

use serde_json::{json, Value};

use tf_test_support::http::send;
use tf_test_support::server::Server;
use tf_test_support::wait::eventually;

const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// `{"k0":0,"k1":0,…}` of about `bytes` bytes: millions of tiny keys.
fn tiny_keys(bytes: usize) -> Vec<u8> {
    let mut body = b"{".to_vec();
    let mut n = 0;
    while body.len() < bytes - 32 {
        body.extend_from_slice(format!("\"k{n}\":0,").as_bytes());
        n += 1;
    }
    body.extend_from_slice(b"\"end\":0}");
    body
}

#[test]
fn json_bodies_past_the_limits_are_refused_clearly() {
    let server = Server::start();
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let many = tiny_keys(2 * 1024 * 1024);
    let long_string =
        json!({"job_queue": "q", "test_data": {"test_cmds": "x".repeat(9 * 1024 * 1024)}})
            .to_string();
    for (what, body, message) in [
        ("deep", deep.into_bytes(), "nesting deeper than 64 levels"),
        ("many values", many, "more than 100000 values"),
        (
            "long string",
            long_string.into_bytes(),
            "a string longer than 8388608 bytes",
        ),
    ] {
        let response = server.post_raw("/v1/job", "application/json", &body);
        assert_eq!(response.status, 413, "{what}: {}", response.text());
        assert!(
            response.text().contains(message),
            "{what}: {}",
            response.text()
        );
    }
    let stored: Value = server.get("/v1/job/search").json();
    assert_eq!(stored, json!([]));
}

#[test]
fn validation_errors_are_capped() {
    let server = Server::start();
    let mut job = serde_json::Map::new();
    job.insert("job_queue".into(), json!("q"));
    for n in 0..5000 {
        job.insert(format!("unknown{n}"), json!(1));
    }
    let response = server.post_json("/v1/job", &Value::Object(job));
    assert_eq!(response.status, 422);
    let detail = &response.json()["detail"]["json"];
    let shown = detail.as_object().expect("an error tree").len();
    assert!(shown <= 101, "{shown} entries shown");
    assert_eq!(detail["_more"], json!(["4900 more errors not shown."]));
    assert_eq!(detail["unknown0"], json!(["Unknown field."]));
}

#[test]
fn big_bodies_neither_stall_other_requests_nor_keep_their_memory() {
    let server = Server::start();
    let body = std::sync::Arc::new(tiny_keys(BODY_LIMIT - 1024));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (address, body) = (server.address.clone(), body.clone());
            std::thread::spawn(move || {
                send(
                    &address,
                    "POST",
                    "/v1/job",
                    &[("Content-Type", "application/json")],
                    &body,
                )
                .map(|response| response.status)
            })
        })
        .collect();
    // While the eight are in flight, the health check is still answered.
    let health = std::thread::spawn({
        let address = server.address.clone();
        move || {
            std::thread::sleep(Duration::from_millis(50));
            send(&address, "GET", "/v1/", &[], b"").map(|response| response.status)
        }
    });
    assert_eq!(health.join().unwrap().expect("GET /v1/ answered"), 200);
    for sender in senders {
        assert_eq!(sender.join().unwrap().expect("an answer"), 413);
    }
    // The allocator gives freed memory back to the system a little later, and later
    // still on a machine busy with other tests.
    let mut resident = 0;
    let returned = eventually(|| {
        resident = server.resident_bytes();
        resident < 300 * 1024 * 1024
    });
    assert!(
        returned,
        "the server holds {} MB after the bodies were refused",
        resident / (1024 * 1024)
    );
}
