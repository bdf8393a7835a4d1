//! Writes from browsers on other sites (cross-site request forgery) are refused, and
//! JSON endpoints take only JSON, as the reference's framework does.

use serde_json::json;

use tf_test_support::server::Server;

const JOB: &[u8] = br#"{"job_queue": "q"}"#;

fn stored_jobs(server: &Server) -> usize {
    let listed = server.get("/v1/job/search").json();
    listed.as_array().map_or(0, Vec::len)
}

#[test]
fn json_endpoints_refuse_bodies_that_are_not_declared_json() {
    let server = Server::start();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|value| vec![("Content-Type", value)])
            .unwrap_or_default();
        let refused = server.request("POST", "/v1/job", &headers, JOB);
        assert_eq!(refused.status, 415, "{content_type:?}: {}", refused.text());
        assert!(
            refused.text().contains("application/json"),
            "{}",
            refused.text()
        );
    }
    assert_eq!(stored_jobs(&server), 0);
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
    ] {
        let accepted = server.request("POST", "/v1/job", &[("Content-Type", content_type)], JOB);
        assert_eq!(accepted.status, 200, "{content_type}: {}", accepted.text());
    }
    // An empty body needs no type (the reference reads it as `{}`).
    let empty = server.request("POST", "/v1/oauth2/refresh", &[], b"");
    assert_eq!(empty.status, 422, "{}", empty.text());
}

#[test]
fn writes_from_another_site_are_refused() {
    let server = Server::start();
    let json_type = ("Content-Type", "application/json");
    for forged in [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
    ] {
        let refused = server.request("POST", "/v1/job", &[json_type, forged], JOB);
        assert_eq!(refused.status, 403, "{forged:?}: {}", refused.text());
    }
    assert_eq!(stored_jobs(&server), 0, "no forged job was stored");

    let id =
        server.submit(&json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "a"}]}}));
    let upload = server.request(
        "POST",
        &format!("/v1/job/{id}/attachments"),
        &[
            ("Content-Type", "multipart/form-data; boundary=x"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nforged\r\n--x--\r\n",
    );
    assert_eq!(upload.status, 403, "a forged upload: {}", upload.text());

    // The same site, a command-line client (no such headers) and reads are fine.
    let origin = format!("http://{}", server.address);
    for allowed in [
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Site", "none"),
        ("Origin", origin.as_str()),
    ] {
        let accepted = server.request("POST", "/v1/job", &[json_type, allowed], JOB);
        assert_eq!(accepted.status, 200, "{allowed:?}: {}", accepted.text());
    }
    let read = server.request(
        "GET",
        "/v1/job/search",
        &[("Sec-Fetch-Site", "cross-site")],
        b"",
    );
    assert_eq!(read.status, 200);
}
