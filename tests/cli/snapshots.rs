//! What scripts read from the client, byte for byte: each test runs a short session under
//! the reference CLI's name (`testflinger-cli`) and compares its transcript with the
//! snapshot in `tests/cli/snapshots/`, which reads as the reference prints it (spec/cli.md).
//!
//! A transcript shows each command as `$ testflinger-cli …` (without the `--server` the
//! tests add), then what it printed on stdout, exactly, then its stderr with each line
//! marked `2> `, then `[exit N]`. An output whose last line has no newline is followed by
//! `\ No newline at end of stdout` (snapshots ignore trailing newlines otherwise). Job
//! ids, times, durations and ports differ from run to run: the filters in [`check`]
//! replace them with placeholders.
//!
//! A changed output fails the test with a diff and writes nothing (`update: no` in
//! `.config/insta.yaml`). When the change is meant, rewrite the snapshots with
//!
//! ```text
//! INSTA_UPDATE=always cargo test --test cli snapshots
//! ```
//!
//! (or `cargo insta test --review` where cargo-insta is installed), read the diff, and
//! commit the `.snap` files with the change.

use serde_json::json;

use tf_test_support::server::Server;

use crate::client::{printed_job_id, register_agent, Client, Run};

/// The reference CLI's name, under which its formats are kept exactly.
const REFERENCE: &str = "testflinger-cli";

/// The commands of one session and what they printed.
struct Session {
    client: Client,
    transcript: String,
}

impl Session {
    fn new(client: Client) -> Session {
        Session {
            client,
            transcript: String::new(),
        }
    }

    /// Runs `testflinger-cli <args>` and adds it to the transcript.
    fn run(&mut self, args: &[&str]) -> Run {
        let run = self.client.run_as(REFERENCE, args);
        let transcript = &mut self.transcript;
        transcript.push_str(&format!("$ {REFERENCE} {}\n", args.join(" ")));
        transcript.push_str(&run.stdout);
        if !run.stdout.is_empty() && !run.stdout.ends_with('\n') {
            transcript.push_str("\n\\ No newline at end of stdout\n");
        }
        for line in run.stderr.lines() {
            transcript.push_str(&format!("2> {line}\n"));
        }
        if !run.stderr.is_empty() && !run.stderr.ends_with('\n') {
            transcript.push_str("\\ No newline at end of stderr\n");
        }
        transcript.push_str(&format!("[exit {}]\n\n", run.code));
        run
    }
}

/// Compares the session's transcript with the snapshot `name`, with the parts that differ
/// between runs replaced.
fn check(name: &str, session: &Session) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (pattern, replacement) in [
        // Job ids; placeholders keep the width, so tables still line up.
        (
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
        ),
        // ISO 8601, as the server writes times.
        (
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?",
            "[timestamp]",
        ),
        // The `jobs` table's submission time.
        (
            r"\b(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{2} \d{2}:\d{2}\b",
            "Www Mmm DD HH:MM",
        ),
        (r"\b(\d+ hours? )?\d+ minutes? \d+ seconds?\b", "[duration]"),
        (r"\b127\.0\.0\.1:\d+\b", "127.0.0.1:[port]"),
    ] {
        settings.add_filter(pattern, replacement);
    }
    settings.bind(|| insta::assert_snapshot!(name, session.transcript));
}

/// The bare id of `submit -q` and the state word of `status` are what scripts capture.
#[test]
fn submitting_and_following_jobs() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let mut session = Session::new(Client::new(&server));
    session.client.write(
        "job.yaml",
        "job_queue: q\ntest_data:\n  test_cmds: echo hi\n",
    );

    let quiet = session.run(&["submit", "-q", "job.yaml"]);
    let first = quiet.stdout.trim_end().to_string();
    session.run(&["status", &first]);
    let loud = session.run(&["submit", "job.yaml"]);
    let second = printed_job_id(&loud.stdout);
    session.run(&["cancel", &second]);
    session.run(&["status", &second]);
    session.run(&["jobs"]);
    session.run(&["jobs", "--status"]);
    check("submitting_and_following_jobs", &session);
}

/// A finished job, as its agent reported it: its results and its whole log.
#[test]
fn reading_a_finished_job() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let mut session = Session::new(Client::new(&server));
    let job_id = session.client.submit("job_queue: q\n");
    server.claim("a1", "q").expect("the job is claimed");
    let agent = server.agent();
    for (number, phase, text) in [
        (0, "setup", "setting up\n"),
        (1, "test", "hello\n"),
        (2, "test", "world, no newline"),
    ] {
        let fragment = json!({
            "fragment_number": number,
            "timestamp": "2026-01-01T00:00:00",
            "phase": phase,
            "log_data": text,
        });
        let posted = agent.post_json(&format!("/v1/result/{job_id}/log/output"), &fragment);
        assert_eq!(posted.status, 200, "{}", posted.text());
    }
    let result = json!({
        "job_state": "complete",
        "status": {"setup": 0, "test": 0},
        "device_info": {"device_ip": "10.0.0.7"},
    });
    let posted = agent.post_json(&format!("/v1/result/{job_id}"), &result);
    assert_eq!(posted.status, 200, "{}", posted.text());

    session.run(&["status", &job_id]);
    session.run(&["results", &job_id]);
    session.run(&["poll", &job_id]);
    session.run(&["poll", "--oneshot", &job_id]);
    session.run(&["poll", "--json", "--phase", "test", &job_id]);
    session.run(&["poll-serial", "--oneshot", &job_id]);
    check("reading_a_finished_job", &session);
}

/// The queues and agents of a lab, as scripts list them.
#[test]
fn listing_queues_and_agents() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    register_agent(&server, "b2", "other");
    let agent = server.agent();
    agent.post_json(
        "/v1/agents/data/b2",
        &json!({"state": "offline", "comment": "broken"}),
    );
    agent.post_json(
        "/v1/agents/queues",
        &json!({"q": "the Q queue", "other": "another"}),
    );
    let mut session = Session::new(Client::new(&server));
    session.run(&["list-queues"]);
    session.run(&["list-queues", "--json"]);
    session.run(&["list-agents"]);
    session.run(&["agent-status", "b2"]);
    session.run(&["agent-status", "a1", "--json"]);
    session.run(&["agent-status", "nobody"]);
    session.run(&["queue-status", "q"]);
    check("listing_queues_and_agents", &session);
}

/// The help under the reference's name: its commands only, none of the lab's.
#[test]
fn the_reference_help() {
    // Help asks no server.
    let mut session = Session::new(Client {
        server: "http://127.0.0.1:1".into(),
        home: tempfile::tempdir().expect("temp dir"),
    });
    session.run(&["--help"]);
    session.run(&["submit", "--help"]);
    session.run(&["poll", "--help"]);
    check("the_reference_help", &session);
}
