//! The web pages, fetched over HTTP from the real server with jobs, agents and queues in
//! several states: content, escaping of untrusted text, search, paging, cancel, 404s.

use serde_json::{json, Value};

use tf_test_support::server::Server;

const HOSTILE: &str = "<script>alert('x')</script>";
const ESCAPED: &str = "&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;";

fn page(server: &Server, path: &str) -> String {
    let response = server.get(path);
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{path}"
    );
    response.text()
}

/// Asserts the page shows the hostile text only escaped.
fn shows_escaped(html: &str, what: &str) {
    assert!(!html.contains(HOSTILE), "{what} is not escaped");
    assert!(
        html.contains(ESCAPED) || html.contains("&lt;script&gt;"),
        "{what} is missing:\n{html}"
    );
}

fn post_fragment(server: &Server, job_id: &str, number: i64, phase: &str, text: &str) {
    let fragment = json!({"fragment_number": number, "timestamp": format!("2026-01-01T10:0{number}:00"), "phase": phase, "log_data": text});
    let path = format!("/v1/result/{job_id}/log/output");
    assert_eq!(server.agent().post_json(&path, &fragment).status, 200);
}

fn report(server: &Server, job_id: &str, body: Value) {
    let path = format!("/v1/result/{job_id}");
    assert_eq!(server.agent().post_json(&path, &body).status, 200);
}

/// A lab with a finished job, a running one, a waiting one and a cancelled one, an agent
/// with a provision history and a described queue, all with hostile names.
struct Lab {
    server: Server,
    finished: String,
    running: String,
    waiting: String,
    cancelled: String,
}

fn lab() -> Lab {
    let server = Server::start();
    let agent = server.agent();
    agent.post_json(
        "/v1/agents/data/dev-1",
        &json!({"state": "test", "queues": ["rpi"], "location": HOSTILE, "job_id": "", "log": ["booted fine"]}),
    );
    agent.post_json(
        "/v1/agents/queues",
        &json!({"rpi": format!("Pi 4 {HOSTILE}")}),
    );
    for code in [0, 0, 1] {
        agent.post_json(
            "/v1/agents/provision_logs/dev-1",
            &json!({"job_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "exit_code": code, "detail": HOSTILE}),
        );
    }
    let finished = server.submit(&json!({"job_queue": "rpi", "name": HOSTILE, "tags": ["nightly"], "test_data": {"test_cmds": "echo hi"}}));
    assert_eq!(
        server.claim("dev-1", "rpi").unwrap()["job_id"],
        json!(finished)
    );
    post_fragment(&server, &finished, 0, "provision", "flashing\n");
    post_fragment(&server, &finished, 1, "test", &format!("{HOSTILE}\n"));
    report(
        &server,
        &finished,
        json!({"job_state": "complete", "status": {"provision": 0, "test": 3}, "device_info": {"device_ip": "10.0.0.9", "agent_name": "dev-1"}}),
    );
    let running = server.submit(&json!({"job_queue": "rpi"}));
    assert_eq!(
        server.claim("dev-1", "rpi").unwrap()["job_id"],
        json!(running)
    );
    report(&server, &running, json!({"job_state": "test"}));
    post_fragment(&server, &running, 0, "setup", "setting up\n");
    let waiting = server.submit(&json!({"job_queue": "rpi"}));
    let cancelled = server.submit(&json!({"job_queue": "other"}));
    let cancel = server.post_json(
        &format!("/v1/job/{cancelled}/action"),
        &json!({"action": "cancel"}),
    );
    assert_eq!(cancel.status, 200);
    Lab {
        server,
        finished,
        running,
        waiting,
        cancelled,
    }
}

#[test]
fn the_overview_and_list_pages_show_the_lab() {
    let lab = lab();
    let overview = page(&lab.server, "/");
    for expected in ["Lab overview", "waiting", "cancelled", "complete", ">rpi<"] {
        assert!(overview.contains(expected), "{expected} in\n{overview}");
    }

    let jobs = page(&lab.server, "/jobs");
    for id in [&lab.finished, &lab.running, &lab.waiting, &lab.cancelled] {
        assert!(jobs.contains(id.as_str()), "{id} in /jobs");
    }
    // Newest first.
    assert!(jobs.find(&lab.cancelled) < jobs.find(&lab.finished));
    // Finished jobs say how they ended, failures in red; unfinished ones say nothing.
    let row = |id: &str| {
        let start = jobs.find(id).unwrap();
        jobs[start..start + jobs[start..].find("</tr>").unwrap()].to_string()
    };
    assert!(
        row(&lab.finished).contains(r#"<span class="state bad">failed: test exited with 3</span>"#),
        "{}",
        row(&lab.finished)
    );
    // The state word of a failed job is not green: only the outcome says pass or fail.
    assert!(
        !row(&lab.finished).contains(r#"class="state ok""#),
        "{}",
        row(&lab.finished)
    );
    assert!(row(&lab.cancelled).contains(">cancelled</span>"));
    for unfinished in [&lab.running, &lab.waiting] {
        let row = row(unfinished);
        assert!(!row.contains("passed") && !row.contains("failed"), "{row}");
    }

    let agents = page(&lab.server, "/agents");
    assert!(agents.contains("dev-1") && agents.contains(">rpi<"));
    shows_escaped(&agents, "the agent's location");

    let queues = page(&lab.server, "/queues");
    assert!(queues.contains("/queues/rpi") && queues.contains("/queues/other"));
    shows_escaped(&queues, "the queue's description");

    let queue = page(&lab.server, "/queues/rpi");
    assert!(queue.contains(&lab.running) && queue.contains(&lab.waiting));
    assert!(
        !queue.contains(&lab.finished),
        "finished jobs are not listed"
    );
    assert!(queue.contains("dev-1") && queue.contains("50th"));

    let agent = page(&lab.server, "/agents/dev-1");
    assert!(agent.contains(&lab.finished), "its recent job");
    assert!(agent.contains("66% of the last 3 passed"), "{agent}");
    assert!(agent.contains("booted fine"), "the agent's log");
    shows_escaped(&agent, "the provision detail");
}

#[test]
fn jobs_are_searched_by_state_queue_tag_and_id_and_paged() {
    let lab = lab();
    let only = |query: &str, expected: &[&String]| {
        let html = page(&lab.server, &format!("/jobs?{query}"));
        for id in [&lab.finished, &lab.running, &lab.waiting, &lab.cancelled] {
            assert_eq!(
                html.contains(id.as_str()),
                expected.contains(&id),
                "{query}: {id}"
            );
        }
    };
    only("state=cancelled", &[&lab.cancelled]);
    only("queue=other", &[&lab.cancelled]);
    only("tag=nightly", &[&lab.finished]);
    // Ids made in the same millisecond can share 24 characters (time, then a counter).
    only(&format!("id={}", &lab.waiting[..30]), &[&lab.waiting]);
    let wildcard = page(&lab.server, "/jobs?id=%25");
    assert!(wildcard.contains("only hexadecimal digits"));
    assert!(!wildcard.contains(&lab.finished));

    for n in 0..50 {
        lab.server
            .submit(&json!({"job_queue": "bulk", "name": format!("bulk {n}")}));
    }
    let first = page(&lab.server, "/jobs");
    assert!(first.contains("offset=50") && !first.contains(&lab.finished));
    let second = page(&lab.server, "/jobs?offset=50");
    assert!(second.contains(&lab.finished) && second.contains("offset=0"));
}

#[test]
fn a_job_page_shows_definition_timeline_logs_and_escapes_them() {
    let lab = lab();
    let html = page(&lab.server, &format!("/jobs/{}", lab.finished));
    shows_escaped(&html, "the job's name and log");
    for expected in [
        "flashing",
        "10.0.0.9",
        "job_queue: rpi",
        "test_cmds: echo hi",
        ">provision<",
        ">3<",
    ] {
        assert!(html.contains(expected), "{expected} in\n{html}");
    }
    // A finished job neither follows its log nor offers to cancel.
    assert!(!html.contains("data-job=") && !html.contains("Cancel job"));

    let running = page(&lab.server, &format!("/jobs/{}", lab.running));
    assert!(running.contains(&format!("data-job=\"{}\"", lab.running)));
    assert!(running.contains("data-next-output=\"1\""), "{running}");
    assert!(running.contains("setting up") && running.contains("Cancel job"));
}

#[test]
fn a_job_page_says_how_it_ended_and_where_it_runs_in_plain_words() {
    let lab = lab();
    let html = page(&lab.server, &format!("/jobs/{}", lab.finished));
    assert!(
        html.contains(
            r#"<dt>Outcome</dt><dd><span class="state bad">failed: test exited with 3</span></dd>"#
        ),
        "{html}"
    );
    assert!(
        html.contains(r#"<dt>Agent</dt><dd><a href="/agents/dev-1">dev-1</a></dd>"#),
        "{html}"
    );
    // Device facts under labels, not the connector's keys.
    assert!(
        html.contains("<dt>Device IP</dt><dd>10.0.0.9</dd>"),
        "{html}"
    );
    assert!(
        !html.contains("device_ip") && !html.contains("agent_name"),
        "{html}"
    );
    // No serial log, no serial section.
    assert!(!html.contains("Serial console"), "{html}");
    // The definition as submitted: no defaults the submitter never wrote, fields in
    // the order of the job schema (name first).
    let definition = &html[html.find("<h2>Job definition</h2>").unwrap()..];
    assert!(!definition.contains("exclude_agents"), "{definition}");
    let at = |key: &str| {
        definition
            .find(key)
            .unwrap_or_else(|| panic!("{key} in {definition}"))
    };
    assert!(at("name:") < at("tags:") && at("tags:") < at("job_queue:"));
    assert!(at("job_queue:") < at("test_data:"));

    // While it runs: its agent, no outcome yet, and the serial section waits hidden for
    // the first serial line.
    let running = page(&lab.server, &format!("/jobs/{}", lab.running));
    assert!(
        running.contains(r#"<dt>Agent</dt><dd><a href="/agents/dev-1">dev-1</a></dd>"#),
        "{running}"
    );
    assert!(!running.contains("<dt>Outcome</dt>"));
    assert!(running.contains(r#"<div id="serial" hidden>"#), "{running}");

    let cancelled = page(&lab.server, &format!("/jobs/{}", lab.cancelled));
    assert!(
        cancelled.contains(r#"<dt>Outcome</dt><dd><span class="state idle">cancelled</span></dd>"#),
        "{cancelled}"
    );
    // Never claimed: no agent to show.
    assert!(!cancelled.contains("<dt>Agent</dt>"));
}

#[test]
fn a_job_definition_keeps_what_the_submitter_wrote() {
    let server = Server::start();
    server
        .agent()
        .post_json("/v1/agents/data/dev-1", &json!({"queues": ["q"]}));
    let written = server
        .submit(&json!({"job_queue": "q", "exclude_agents": ["dev-9"], "global_timeout": 600}));
    let html = page(&server, &format!("/jobs/{written}"));
    assert!(
        html.contains("exclude_agents:") && html.contains("dev-9"),
        "{html}"
    );
    assert!(html.contains("global_timeout: 600"), "{html}");
}

#[test]
fn the_cancel_button_cancels_and_returns_to_the_job() {
    let lab = lab();
    let path = format!("/jobs/{}/cancel", lab.waiting);
    let response = lab
        .server
        .post_raw(&path, "application/x-www-form-urlencoded", b"");
    assert_eq!(response.status, 303);
    assert_eq!(
        response.header("location"),
        Some(format!("/jobs/{}", lab.waiting).as_str())
    );
    let state = lab
        .server
        .get(&format!("/v1/result/{}", lab.waiting))
        .json();
    assert_eq!(state["job_state"], json!("cancelled"));
    // A form on another site cannot cancel (cross-site request forgery).
    let path = format!("/jobs/{}/cancel", lab.running);
    let form = "application/x-www-form-urlencoded";
    for header in [
        ("Sec-Fetch-Site", "cross-site"),
        ("Origin", "http://elsewhere.example"),
    ] {
        let forged = lab
            .server
            .request("POST", &path, &[("Content-Type", form), header], b"");
        assert_eq!(forged.status, 403, "{header:?}");
    }
    let running = lab
        .server
        .get(&format!("/v1/result/{}", lab.running))
        .json();
    assert_eq!(running["job_state"], json!("test"));
    let unknown = lab.server.post_raw(
        "/jobs/00000000-0000-4000-8000-000000000000/cancel",
        "application/x-www-form-urlencoded",
        b"",
    );
    assert_eq!(unknown.status, 404);
}

#[test]
fn unknown_jobs_and_agents_are_404_pages_and_assets_are_served() {
    let server = Server::start();
    for (path, message) in [
        (
            "/jobs/00000000-0000-4000-8000-000000000000",
            "Job not found",
        ),
        ("/jobs/not-a-job", "Job not found"),
        ("/agents/nobody", "Agent not found: nobody"),
    ] {
        let response = server.get(path);
        assert_eq!(response.status, 404, "{path}");
        assert!(response.text().contains(message), "{path}");
    }
    // Untrusted text is never sniffed into HTML, and pages only run their own script.
    let overview = server.get("/");
    assert_eq!(overview.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        overview.header("content-security-policy"),
        Some("default-src 'self'; frame-ancestors 'none'")
    );
    let script = server.get("/static/tf.js");
    assert_eq!(script.status, 200);
    assert!(script
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.text().contains("followJob"));
    assert_eq!(server.get("/static/tf.css").status, 200);
}

#[test]
fn secret_values_never_reach_a_page() {
    let server = Server::start();
    let dev = server.client("dev", "contributor", &[]);
    let value = "s3cr3t-value-that-must-not-leak";
    let stored = dev.put_secret("dev", "lab/token", value);
    assert_eq!(stored.status, 200, "{}", stored.text());
    let job_id = dev.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "true", "secrets": {"TOKEN": "lab/token"}}}));
    // The agent gets the value with the job; the pages must not, before or after.
    assert_eq!(
        server.claim("dev-1", "q").unwrap()["test_data"]["secrets"]["TOKEN"],
        json!(value)
    );
    for path in ["/", "/jobs", "/queues/q", &format!("/jobs/{job_id}")] {
        let html = page(&server, path);
        assert!(!html.contains(value), "{path} shows the secret");
    }
    assert!(page(&server, &format!("/jobs/{job_id}")).contains("lab/token"));
}

#[test]
fn a_huge_log_shows_only_its_end_with_a_link_to_the_whole() {
    let server = Server::start();
    let job_id = server.submit(&json!({"job_queue": "q"}));
    server.claim("dev-1", "q").unwrap();
    let chunk = "x".repeat(900 << 10);
    for (number, marker) in ["FIRST", "SECOND", "THIRD"].iter().enumerate() {
        post_fragment(
            &server,
            &job_id,
            number as i64,
            "test",
            &format!("{marker}{chunk}"),
        );
    }
    let html = page(&server, &format!("/jobs/{job_id}"));
    assert!(
        !html.contains("FIRST"),
        "what does not fit in 2 MiB is left out"
    );
    assert!(html.contains("SECOND") && html.contains("THIRD"));
    assert!(html.contains("Only the end of the output is shown here"));
    // Following continues after the last fragment shown, not the last one kept out.
    assert!(html.contains("data-next-output=\"3\""));
}
