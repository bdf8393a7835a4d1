//! Who may touch a job: its attachments belong to whoever submitted it.

use serde_json::json;

use tf_test_support::server::Server;

const WITH_ATTACHMENTS: &str =
    r#"{"job_queue": "q", "test_data": {"attachments": [{"agent": "a.txt"}]}}"#;

fn job_with_attachments() -> serde_json::Value {
    serde_json::from_str(WITH_ATTACHMENTS).expect("valid JSON")
}

#[test]
fn only_the_submitter_or_an_admin_uploads_a_token_jobs_attachments() {
    let server = Server::start();
    let owner = server.client("owner", "contributor", &[]);
    let stranger = server.client("stranger", "contributor", &[]);
    let admin = server.client("boss", "admin", &[]);

    let id = owner.submit(&job_with_attachments());
    let path = format!("/v1/job/{id}/attachments");
    for (who, caller) in [("another client", &stranger), ("anonymous", &*server)] {
        let refused = caller.upload(&path, "file", b"replaced by a stranger");
        assert_eq!(refused.status, 403, "{who}: {}", refused.text());
        let why = if who == "anonymous" {
            "with the same token"
        } else {
            "another client"
        };
        assert!(
            refused.text().contains(why),
            "{who}: the refusal says why: {}",
            refused.text()
        );
    }
    assert_eq!(server.claim("a", "q"), None, "no upload was accepted");
    let uploaded = owner.upload(&path, "file", b"the owner's archive");
    assert_eq!((uploaded.status, uploaded.text()), (200, "OK".to_string()));
    let download = server.agent().get(&path);
    assert_eq!(download.body, b"the owner's archive");

    let for_admin = owner.submit(&job_with_attachments());
    let by_admin = admin.upload(&format!("/v1/job/{for_admin}/attachments"), "file", b"x");
    assert_eq!(by_admin.status, 200, "{}", by_admin.text());
}

#[test]
fn an_anonymous_jobs_first_upload_wins_and_a_different_one_is_refused() {
    let server = Server::start();
    let id = server.submit(&job_with_attachments());
    let path = format!("/v1/job/{id}/attachments");
    let first = server.upload(&path, "file", b"the first archive");
    assert_eq!(first.status, 200, "{}", first.text());

    let identical = server.upload(&path, "file", b"the first archive");
    assert_eq!(identical.status, 200, "a retry of the same bytes is fine");
    assert!(
        identical.text().contains("already received"),
        "{}",
        identical.text()
    );

    let stranger = server.client("stranger", "contributor", &[]);
    for (who, caller) in [("anonymous", &*server), ("a client", &stranger)] {
        let different = caller.upload(&path, "file", b"someone else's archive");
        assert_eq!(different.status, 409, "{who}: {}", different.text());
    }
    let download = server.agent().get(&path);
    assert_eq!(
        download.body, b"the first archive",
        "the first upload stays"
    );
}

#[test]
fn a_job_naming_secrets_needs_a_token() {
    let server = Server::start();
    let refused = server.post_json(
        "/v1/job",
        &json!({"job_queue": "q", "test_data": {"secrets": {"TOKEN": "ci/token"}}}),
    );
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert!(
        refused.text().contains("not authenticated"),
        "the refusal says a token is needed: {}",
        refused.text()
    );
    let listed = server.get("/v1/job/search").json();
    assert_eq!(listed, json!([]), "nothing was stored");
}
