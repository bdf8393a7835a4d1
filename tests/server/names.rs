//! Names (queues, agents, tags, clients, secret paths, labels) have length limits and no
//! control characters, wherever they come in: bodies, paths, queries and cookies.

use serde_json::{json, Value};

use tf_test_support::http::Response;
use tf_test_support::server::Server;
use tf_test_support::tf_clients_output;

const LONGEST_QUEUE: usize = 200;

fn assert_refused(response: &Response, what: &str, message: &str) {
    assert_eq!(response.status, 422, "{what}: {}", response.text());
    assert!(
        response.text().contains(message),
        "{what}: {message:?} not in {}",
        response.text()
    );
}

#[test]
fn submissions_refuse_overlong_names_and_control_characters() {
    let server = Server::start();
    let longest = "q".repeat(LONGEST_QUEUE);
    server.submit(&json!({"job_queue": longest}));

    let too_long = format!("{longest}q");
    for (what, job, message) in [
        (
            "queue",
            json!({"job_queue": too_long}),
            "Longer than maximum length 200.",
        ),
        (
            "queue with a newline",
            json!({"job_queue": "a\nb"}),
            "Must not contain control characters.",
        ),
        (
            "tag",
            json!({"job_queue": "q", "tags": ["ok", "x".repeat(201)]}),
            "Longer than maximum length 200.",
        ),
        (
            "excluded agent",
            json!({"job_queue": "q", "exclude_agents": ["a\u{1b}[31m"]}),
            "Must not contain control characters.",
        ),
        (
            "name",
            json!({"job_queue": "q", "name": "n".repeat(5_000_000)}),
            "Longer than maximum length 1024.",
        ),
    ] {
        assert_refused(&server.post_json("/v1/job", &job), what, message);
    }
    let stored: Value = server.get("/v1/job/search").json();
    assert_eq!(
        stored.as_array().map(Vec::len),
        Some(1),
        "only the valid job"
    );
}

#[test]
fn agents_queues_and_clients_are_named_within_limits() {
    let server = Server::start();
    let agent = server.agent();
    let long_agent = "a".repeat(201);
    assert_refused(
        &agent.post_json(
            &format!("/v1/agents/data/{long_agent}"),
            &json!({"state": "waiting"}),
        ),
        "agent name in the path",
        "Invalid agent name: Longer than maximum length 200.",
    );
    assert_refused(
        &agent.post_json("/v1/agents/data/rpi", &json!({"queues": ["q", "q\r\n"]})),
        "queue in an agent report",
        "Must not contain control characters.",
    );
    assert_refused(
        &agent.post_json("/v1/agents/queues", &json!({"q".repeat(201): "too long"})),
        "advertised queue",
        "Invalid queue name",
    );
    let claim = agent.request(
        "GET",
        &format!("/v1/job?queue={}", "q".repeat(201)),
        &[("Cookie", "agent_name=rpi")],
        b"",
    );
    assert_refused(&claim, "claimed queue", "Invalid queue name");
    let cookie = format!("agent_name={long_agent}");
    let claim = agent.request("GET", "/v1/job?queue=q", &[("Cookie", &cookie)], b"");
    assert_refused(&claim, "agent cookie", "Invalid agent name");

    let admin = server.client("boss", "admin", &[]);
    let long_client = "c".repeat(257);
    let put = admin.request(
        "PUT",
        &format!("/v1/client-permissions/{long_client}"),
        &[("Content-Type", "application/json")],
        json!({"client_secret": "a-long-enough-secret"})
            .to_string()
            .as_bytes(),
    );
    assert_refused(
        &put,
        "client id",
        "Invalid client id: Longer than maximum length 256.",
    );
    let added = tf_clients_output(&server.data_dir, &["add", &long_client, "--role", "agent"]);
    assert!(!added.status.success());
    assert!(
        String::from_utf8_lossy(&added.stderr).contains("Longer than maximum length 256."),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
}
