//! `submit` and following a job: `poll`, `results`, `artifacts`, attachments.

use serde_json::{json, Value};

use tf_test_support::agent::{wait_for_agent_state, wait_for_state, Agent};
use tf_test_support::server::Server;

use crate::client::{register_agent, Client};

#[test]
fn submit_quiet_prints_the_bare_id_and_status_the_state_word() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let client = Client::new(&server);
    let job = client.write(
        "job.yaml",
        "job_queue: q\ntest_data:\n  test_cmds: echo hi\n",
    );
    let run = client.run(&["submit", "-q", job.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let job_id = run.stdout.trim_end().to_string();
    assert_eq!(run.stdout, format!("{job_id}\n"));
    assert_eq!(job_id.len(), 36);

    let status = client.run(&["status", &job_id]);
    assert_eq!((status.code, status.stdout.as_str()), (0, "waiting\n"));

    let normal = client.run(&["submit", job.to_str().unwrap()]);
    let second = normal
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("job_id: ")
        .to_string();
    assert_eq!(
        normal.stdout,
        format!("Job submitted successfully!\njob_id: {second}\n")
    );

    // The history has both, oldest first, in the reference's table.
    let jobs = client.run(&["jobs"]);
    let lines: Vec<&str> = jobs.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("{:<36} {:<9} Submission Time  Queue", "Job ID", "")
    );
    assert_eq!(lines[1], "-".repeat(79));
    assert!(
        lines[2].starts_with(&format!("{job_id}           ")),
        "{:?}",
        lines[2]
    );
    assert!(lines[2].ends_with(" q"), "{:?}", lines[2]);
    assert!(lines[3].starts_with(&second));
    let history =
        std::fs::read_to_string(client.config_dir().join("testflinger-cli-history.json")).unwrap();
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[&job_id]["queue"], json!("q"));

    let with_state = client.run(&["jobs", "--status"]);
    assert!(
        with_state
            .stdout
            .lines()
            .nth(2)
            .unwrap()
            .contains(" waiting   "),
        "{with_state:?}"
    );
}

#[test]
fn status_and_jobs_tell_how_finished_jobs_ended() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let client = Client::new(&server);
    let failed = client.submit("job_queue: q\ntest_data:\n  test_cmds: exit 1\n");
    let waiting = client.submit("job_queue: q\n");
    server.claim("a1", "q").unwrap();
    let report = json!({"job_state": "complete", "status": {"setup": 0, "test": 1}});
    server
        .agent()
        .post_json(&format!("/v1/result/{failed}"), &report);

    // The state word stays what scripts read; --outcome adds how it ended.
    let status = client.run(&["status", &failed]);
    assert_eq!((status.code, status.stdout.as_str()), (0, "complete\n"));
    let outcome = client.run(&["status", "--outcome", &failed]);
    assert_eq!(
        (outcome.code, outcome.stdout.as_str()),
        (0, "complete\nfailed: test exited with 1\n")
    );
    let unfinished = client.run(&["status", "--outcome", &waiting]);
    assert_eq!(unfinished.stdout, "waiting\n");

    let plain = client.run(&["jobs"]);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(plain.stdout.contains(&failed), "{plain:?}");
    assert!(!plain.stdout.contains("Outcome") && !plain.stdout.contains("failed:"));
    let jobs = client.run(&["jobs", "--status"]);
    let lines: Vec<&str> = jobs.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "{:<36} {:<9} Submission Time  Queue  Outcome",
            "Job ID", "Status"
        ),
        "{jobs:?}"
    );
    assert!(
        lines[2].starts_with(&format!("{failed} complete  ")),
        "{jobs:?}"
    );
    assert!(
        lines[2].ends_with(" q      failed: test exited with 1"),
        "{jobs:?}"
    );
    assert!(
        lines[3].starts_with(&format!("{waiting} waiting   ")),
        "{jobs:?}"
    );
    assert!(lines[3].ends_with(" q"), "{jobs:?}");
    // Under the reference's name, its table exactly.
    let reference = client.run_as("testflinger-cli", &["jobs", "--status"]);
    assert!(!reference.stdout.contains("Outcome"), "{reference:?}");
    assert!(
        reference.stdout.lines().nth(2).unwrap().ends_with(" q"),
        "{reference:?}"
    );
    // Known now: a second listing asks the server nothing about the finished job.
    let history =
        std::fs::read_to_string(client.config_dir().join("testflinger-cli-history.json")).unwrap();
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(
        history[&failed]["outcome"],
        json!({"result": "failed", "phase": "test", "exit_code": 1})
    );
    assert_eq!(history[&failed]["job_state"], json!("complete"));
    // So a later listing tells it with the server gone.
    assert!(server.terminate());
    let offline = client.run(&["jobs", "--status"]);
    let line = offline
        .stdout
        .lines()
        .find(|line| line.starts_with(&failed));
    assert!(
        line.is_some_and(|line| line.ends_with(" q      failed: test exited with 1")),
        "{offline:?}"
    );
}

#[test]
fn submit_refuses_bad_jobs_with_the_reference_messages() {
    let server = Server::start();
    let client = Client::new(&server);
    let no_queue = client.write("a.yaml", "test_data: {test_cmds: x}\n");
    let run = client.run(&["submit", no_queue.to_str().unwrap()]);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (1, "Error: Queue was not specified in job\n")
    );

    let bad_exclude = client.write("b.yaml", "job_queue: q\nexclude_agents: a1\n");
    let run = client.run(&["submit", bad_exclude.to_str().unwrap()]);
    assert_eq!(
        run.stderr,
        "Error: exclude_agents must be a list if provided.\n"
    );

    // A queue nobody ever served does not exist; one whose agents are offline is
    // refused, unless asked to wait.
    let job = client.write("unknown.yaml", "job_queue: nowhere\n");
    let run = client.run(&["submit", job.to_str().unwrap()]);
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (1, "Queue 'nowhere' does not exist.\n")
    );
    register_agent(&server, "a1", "nobody");
    server
        .agent()
        .post_json("/v1/agents/data/a1", &json!({"state": "offline"}));
    let job = client.write("c.yaml", "job_queue: nobody\n");
    let run = client.run(&["submit", job.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "ERROR: No online agents available for queue nobody. If you want to wait for agents to become available, use the --wait-for-available-agents option.\n");
    let waiting = client.run(&[
        "submit",
        "-q",
        "--wait-for-available-agents",
        job.to_str().unwrap(),
    ]);
    assert_eq!(waiting.code, 0, "{waiting:?}");
    assert!(waiting.stdout.starts_with(
        "WARNING: No online agents available for queue nobody.  Waiting for agents to become available...\n"
    ));

    // Broken files: one line, exit 1, no traceback.
    let run = client.run(&["submit", "missing.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with("Cannot read file missing.yaml"),
        "{run:?}"
    );
    let broken = client.write("d.yaml", "job_queue: [unclosed\n");
    let run = client.run(&["submit", broken.to_str().unwrap()]);
    assert_eq!((run.code, run.stderr.lines().count()), (1, 1), "{run:?}");

    // The server's validation, in the reference's words.
    register_agent(&server, "a2", "q");
    let invalid = client.write("e.yaml", "job_queue: q\njob_priority: high\n");
    let run = client.run(&["submit", invalid.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with("Unexpected error status from testflinger server: [422] Validation error - job_priority: ['Not a valid integer.']"),
        "{run:?}"
    );

    // YAML 1.1 as the reference reads it: a plain `on` is a boolean (so not a tag)...
    let run = client.run_with_input(&["submit", "-q", "-"], "job_queue: q\ntags: [on]\n");
    assert!(
        run.stderr
            .ends_with("tags: {'0': ['Not a valid string.']}\n"),
        "{run:?}"
    );
    // ... and a quoted one a string. The job comes from stdin here.
    let run = client.run_with_input(&["submit", "-q", "-"], "job_queue: q\nname: 'yes'\n");
    assert_eq!(run.code, 0, "{run:?}");
    let job = server.get(&format!("/v1/job/{}", run.stdout.trim())).json();
    assert_eq!(job["name"], json!("yes"));
}

#[test]
fn a_job_with_attachments_runs_and_its_results_and_artifacts_come_back() {
    let server = Server::start();
    let agent = Agent::start(
        &server,
        "test_command: 'cat attachments/test/data/input.txt; mkdir -p artifacts; echo kept > artifacts/out.txt'\n",
    );
    wait_for_agent_state(&server, "waiting");
    let client = Client::new(&server);
    client.write("input.txt", "attached text\n");
    let job = client.write(
        "job.yaml",
        "job_queue: q\ntest_data:\n  test_cmds: x\n  attachments:\n    - local: input.txt\n      agent: data/input.txt\n",
    );
    let submitted = client.run(&["submit", "-q", "--poll", job.to_str().unwrap()]);
    assert_eq!(submitted.code, 0, "{submitted:?}\n{}", agent.log());
    let job_id = submitted.stdout.lines().next().unwrap().to_string();
    assert!(
        submitted.stdout.contains("attached text\n"),
        "{}",
        submitted.stdout
    );
    assert!(
        submitted.stdout.contains("State 'test' lasted 0 minutes "),
        "{}",
        submitted.stdout
    );

    let results = client.run(&["results", &job_id]);
    let parsed: Value = serde_json::from_str(&results.stdout).unwrap();
    assert_eq!(parsed["test_status"], json!(0));
    assert!(
        results
            .stdout
            .starts_with("{\n    \"job_state\": \"complete\",\n"),
        "{}",
        results.stdout
    );

    let download = client.run(&["artifacts", "--filename", "out.tgz", &job_id]);
    assert_eq!(
        download.stdout,
        "Downloading artifacts tarball...\nArtifacts downloaded to out.tgz\n"
    );
    assert!(client.home.path().join("out.tgz").metadata().unwrap().len() > 0);

    let shown = client.run(&["show", &job_id]);
    let definition: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(
        definition["test_data"]["attachments"],
        json!([{"agent": "data/input.txt"}])
    );
    let yaml = client.run(&["show", "--yaml", &job_id]);
    assert!(yaml.stdout.contains("job_queue: q\n"), "{}", yaml.stdout);
    assert!(yaml.stdout.ends_with("\n\n"));

    // A finished job: the log from the start, then exit 0; --oneshot gives the number.
    let again = client.run(&["poll", &job_id]);
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("attached text\n"));
    let oneshot = client.run(&["poll", "--oneshot", "--phase", "test", &job_id]);
    assert!(
        oneshot
            .stdout
            .contains("attached text\nLast Fragment Number: "),
        "{oneshot:?}"
    );
    let json_log = client.run(&["poll", "--json", "--phase", "test", &job_id]);
    let log: Value = serde_json::from_str(&json_log.stdout).unwrap();
    assert!(log["output"]["test"]["log_data"]
        .as_str()
        .unwrap()
        .contains("attached text"));
}

#[test]
fn show_yaml_writes_what_reads_back() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let client = Client::new(&server);
    // Indented first line and blank lines at the end: the reference's `|4+` block; a
    // multi-line or long key: an explicit `? ` key; a tab: no block but a quoted string.
    let job_id = client.submit(
        &r#"{"job_queue": "q", "test_data": {"test_cmds": "  indented\nnext\n\n"},
            "allocate_data": {"two\nlines": 1, "z": 1.0e+20, "tabbed": "a\tb\n", "LONG": 1}}"#
            .replace("LONG", &"y".repeat(123)),
    );
    let shown = client.run(&["show", "--yaml", &job_id]);
    assert!(
        shown
            .stdout
            .ends_with("    test_cmds: |4+\n          indented\n        next\n\n...\n\n"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.starts_with(
            &"allocate_data:\n    tabbed: \"a\\tb\\n\"\n    ? |\n        two\n        lines\n    : 1\n    ? LONG\n    : 1\n    z: 1.0e+20\n"
                .replace("LONG", &"y".repeat(123))
        ),
        "{}",
        shown.stdout
    );
}

#[test]
fn poll_can_exit_with_the_jobs_outcome_for_ci() {
    let server = Server::start();
    let _agent = Agent::start(&server, "test_command: echo failing; exit 3\n");
    wait_for_agent_state(&server, "waiting");
    let client = Client::new(&server);
    let job_id = client.submit("job_queue: q\ntest_data: {test_cmds: x}\n");
    let plain = client.run(&["poll", &job_id]);
    assert_eq!(plain.code, 0, "the reference's poll always exits 0");
    let strict = client.run(&["poll", "--exit-status", &job_id]);
    assert_eq!(strict.code, 3, "{strict:?}");
    wait_for_state(&server, &job_id, &["complete"]);
}

#[test]
fn waiting_jobs_show_their_place_and_oneshot_waits_on_output() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let client = Client::new(&server);
    let job_id = client.submit("job_queue: q\n");
    let oneshot = client.run(&["poll", "--oneshot", &job_id]);
    assert_eq!(oneshot.stdout, "Waiting on Output\n");
    let cancel = client.run(&["cancel", &job_id]);
    assert_eq!(
        (cancel.code, cancel.stdout),
        (0, format!("Job {job_id} cancelled\n"))
    );
    let again = client.run(&["cancel", &job_id]);
    assert_eq!(
        (again.code, again.stderr.as_str()),
        (
            1,
            "Invalid job ID specified or the job is already complete/cancelled.\n"
        )
    );
    let status = client.run(&["status", &job_id]);
    assert_eq!(status.stdout, "cancelled\n");
}

#[test]
fn reserve_builds_the_job_from_flags_or_answers() {
    let server = Server::start();
    register_agent(&server, "a1", "rpi4");
    server
        .agent()
        .post_json("/v1/agents/queues", &json!({"rpi4": "Raspberry Pi 4"}));
    let client = Client::new(&server);
    let dry = client.run(&[
        "reserve",
        "--dry-run",
        "-q",
        "rpi4",
        "--distro",
        "noble",
        "-k",
        "lp:me",
        "--timeout",
        "600",
    ]);
    assert_eq!(
        dry.stdout,
        "\nThe following job will be submitted:\n{\n  \"job_queue\": \"rpi4\",\n  \"reserve_data\": {\n    \"ssh_keys\": [\n      \"lp:me\"\n    ],\n    \"timeout\": 600\n  },\n  \"provision_data\": {\n    \"distro\": \"noble\"\n  }\n}\n"
    );
    // Interactive: the queue and keys are asked for; no image means no provision data.
    let asked = client.run_with_input(&["reserve", "--dry-run"], "rpi4\n\ny\nlp:me\n");
    assert_eq!(asked.code, 0, "{asked:?}");
    assert!(asked
        .stdout
        .contains("Enter the queue you wish to use ('?' to list): "));
    assert!(
        asked
            .stdout
            .contains("\"ssh_keys\": [\n      \"lp:me\"\n    ]"),
        "{}",
        asked.stdout
    );
    assert!(!asked.stdout.contains("provision_data"));
    // Declining submits nothing.
    let declined = client.run_with_input(
        &["reserve", "-q", "rpi4", "--distro", "noble", "-k", "lp:me"],
        "n\n",
    );
    assert_eq!(declined.code, 0);
    assert!(
        server.get("/v1/job/search").body.len() <= 2,
        "nothing was submitted"
    );
}

#[test]
fn poll_serial_reads_the_serial_log() {
    let server = Server::start();
    let _agent = Agent::start(&server, "test_command: echo console > test-serial.log\n");
    wait_for_agent_state(&server, "waiting");
    let client = Client::new(&server);
    let job_id = client.submit("job_queue: q\ntest_data: {test_cmds: x}\n");
    wait_for_state(&server, &job_id, &["complete"]);
    let serial = client.run(&["poll-serial", "--oneshot", &job_id]);
    assert_eq!(serial.stdout, "console\nLast Fragment Number: 0\n");
}
