//! `list-queues`, `list-agents`, `agent-status`, `queue-status`, `admin`.

use serde_json::{json, Value};

use tf_test_support::server::Server;

use crate::client::{add_admin, register_agent, Client, ADMIN};

const BOLD: &str = "\x1b[1m";
const PLAIN: &str = "\x1b[0m";

#[test]
fn queues_and_agents_print_as_the_reference_prints_them() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    register_agent(&server, "b2", "other");
    server.agent().post_json(
        "/v1/agents/data/b2",
        &json!({"state": "offline", "comment": "broken"}),
    );
    server.agent().post_json(
        "/v1/agents/queues",
        &json!({"q": "the Q queue", "other": "another"}),
    );
    let client = Client::new(&server);

    let queues = client.run(&["list-queues"]);
    assert_eq!(
        queues.stdout,
        "Advertised queues on this server:\n other - another\n q - the Q queue\n"
    );
    assert!(queues
        .stderr
        .contains("This only shows a curated list of queues with descriptions"));
    let json_queues = client.run(&["list-queues", "--json"]);
    assert_eq!(
        json_queues.stdout,
        "{\"other\": \"another\", \"q\": \"the Q queue\"}\n"
    );

    // Into a pipe, no colour codes (the reference's bold headers are for people).
    let table = client.run(&["list-agents"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0], "NAME  STATUS   LOCATION  PROVISION TYPE  COMMENT",
        "{:?}",
        table.stdout
    );
    assert_eq!(lines[1], "a1    waiting  lab 1     -               -      ");
    assert_eq!(lines[2], "b2    offline  lab 1     -               broken ");
    let names = client.run(&["list-agents", "-1", "--filter-status", "online"]);
    assert_eq!(names.stdout, "a1\n");
    // An abbreviated option, as the reference's docs use it.
    let filtered = client.run(&["list-agents", "-1", "--filter-queue", "oth"]);
    assert_eq!(filtered.stdout, "b2\n");
    let summary = client.run(&["list-agents", "--summary"]);
    assert!(
        summary.stdout.starts_with(
            "STATE             COUNT   TOTAL \nOnline:                   1\n  waiting         1\n"
        ),
        "{:?}",
        summary.stdout
    );
    // On a terminal the headers are bold, as the reference prints them, unless NO_COLOR.
    let header = format!(
        "{BOLD}NAME{PLAIN}  {BOLD}STATUS {PLAIN}  {BOLD}LOCATION{PLAIN}  {BOLD}PROVISION TYPE{PLAIN}  {BOLD}COMMENT{PLAIN}"
    );
    let seen = client.run_on_terminal(&["list-agents"], &[]);
    assert!(seen.starts_with(&format!("{header}\r\n")), "{seen:?}");
    let summary = client.run_on_terminal(&["list-agents", "--summary"], &[]);
    assert!(
        summary.starts_with(&format!("{BOLD}STATE           {PLAIN}")),
        "{summary:?}"
    );
    for args in [&["list-agents"][..], &["list-agents", "--summary"][..]] {
        let seen = client.run_on_terminal(args, &[("NO_COLOR", "1")]);
        assert!(
            seen.starts_with("NAME") || seen.starts_with("STATE"),
            "{seen:?}"
        );
        assert!(!seen.contains('\x1b'), "{seen:?}");
    }
    let none = client.run(&["list-agents", "--filter-name", "^zz"]);
    assert_eq!(
        none.stdout,
        "No agents found matching the filter criteria.\n"
    );

    let state = client.run(&["agent-status", "b2"]);
    assert_eq!(state.stdout, "offline\n");
    let record = client.run(&["agent-status", "a1", "--json"]);
    let parsed: Value = serde_json::from_str(&record.stdout).unwrap();
    assert_eq!(
        (parsed["agent"].clone(), parsed["status"].clone()),
        (json!("a1"), json!("waiting"))
    );
    let missing = client.run(&["agent-status", "nobody"]);
    assert_eq!(
        (missing.code, missing.stderr.as_str()),
        (1, "Agent 'nobody' does not exist.\n")
    );

    let job = client.write("job.yaml", "job_queue: q\n");
    client.run(&["submit", "-q", job.to_str().unwrap()]);
    let status = client.run(&["queue-status", "q"]);
    assert_eq!(
        status.stdout,
        "Agents in queue: 1\nAvailable:       1\nBusy:            0\nOffline:         0\nJobs waiting:    1\nJobs running:    0\nJobs completed:   0\n"
    );
    let unknown = client.run(&["queue-status", "nowhere"]);
    assert_eq!(unknown.code, 1);
}

#[test]
fn admins_change_agent_states_and_read_permissions() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    add_admin(&server);
    let client = Client::new(&server);
    let admin = ADMIN;

    let mut args = vec![
        "admin",
        "set",
        "agent-status",
        "--status",
        "maintenance",
        "--agents",
        "a1",
        "ghost",
    ];
    args.extend_from_slice(&admin);
    let set = client.run(&args);
    assert_eq!(
        set.stdout, "Agent a1 status is now: maintenance\nAgent ghost does not exist.\n",
        "{set:?}"
    );
    let record = server.get("/v1/agents/data/a1").json();
    assert_eq!(
        record["comment"],
        json!("Set to offline by root for lab-related task.")
    );

    let mut args = vec![
        "admin",
        "get",
        "client-permissions",
        "--testflinger-client-id",
        "root",
    ];
    args.extend_from_slice(&admin);
    let permissions = client.run(&args);
    let parsed: Value = serde_json::from_str(&permissions.stdout).unwrap_or(Value::Null);
    assert_eq!(parsed["role"], json!("admin"), "{permissions:?}");

    // A contributor is refused before anything is sent.
    let secret = server.add_client("dev", "contributor", &[]);
    let refused = client.run(&[
        "admin",
        "get",
        "client-permissions",
        "--client-id",
        "dev",
        "--secret-key",
        &secret,
    ]);
    assert_eq!(
        refused.stderr,
        "Authorization Error: Command requires role: admin, manager\n"
    );
}

#[test]
fn queue_status_json_keeps_the_reference_key_order() {
    let server = Server::start();
    register_agent(&server, "a1", "q");
    let client = Client::new(&server);
    let job_id = client.submit("job_queue: q\n");
    let status = client.run(&["queue-status", "q", "--json", "-v"]);
    let keys: Vec<&str> = status
        .stdout
        .lines()
        .filter(|l| l.starts_with("  \""))
        .map(|l| l.trim().split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "queue",
            "agents",
            "jobs_waiting",
            "jobs_running",
            "jobs_completed"
        ]
    );
    assert!(
        status
            .stdout
            .contains(&format!("\"job_id\": \"{job_id}\",\n      \"created_at\"")),
        "{}",
        status.stdout
    );
    let verbose = client.run(&["queue-status", "q", "-v"]);
    assert!(
        verbose
            .stdout
            .contains(&format!("\nJobs Waiting:\n  {job_id} - ")),
        "{}",
        verbose.stdout
    );
}

#[test]
fn admins_manage_client_permissions() {
    let server = Server::start();
    add_admin(&server);
    let client = Client::new(&server);
    let admin = ADMIN;
    let mut args = vec![
        "admin",
        "set",
        "client-permissions",
        "--testflinger-client-id",
        "ci",
        "--testflinger-client-secret",
        "ci-secret-0123456789",
        "--role",
        "contributor",
        "--max-priority",
        "{\"q\": 10}",
    ];
    args.extend_from_slice(&admin);
    let created = client.run(&args);
    assert_eq!(created.code, 0, "{created:?}");
    assert!(created.stdout.contains("'ci'"), "{created:?}");
    let login = client.run(&[
        "login",
        "--client-id",
        "ci",
        "--secret-key",
        "ci-secret-0123456789",
    ]);
    assert_eq!(login.stdout, "Successfully authenticated as 'ci'\n");
    let mut args = vec![
        "admin",
        "delete",
        "client-permissions",
        "--testflinger-client-id",
        "ci",
    ];
    args.extend_from_slice(&admin);
    assert_eq!(
        client.run(&args).stdout,
        "Succesfully deleted ci from database\n"
    );
}
