//! The command line itself, settings, login, secrets, errors, aliases, completions.

use tf_test_support::server::Server;

use crate::client::Client;

const UNKNOWN_JOB: &str = "01a21000-0000-7000-8000-000000000000";

#[test]
fn lookups_of_unknown_or_invalid_jobs_use_the_reference_wording() {
    let server = Server::start();
    let client = Client::new(&server);
    let unknown = client.run(&["status", UNKNOWN_JOB]);
    assert_eq!(
        (unknown.code, unknown.stderr.as_str()),
        (
            1,
            "No data found for that job id. Check the job id to be sure it is correct\n"
        )
    );
    let invalid = client.run(&["status", "not-a-uuid"]);
    assert_eq!(
        invalid.stderr,
        "Invalid job id specified. Check the job id to be sure it is correct\n"
    );
    assert_eq!(
        client.run(&["show", UNKNOWN_JOB]).stderr,
        "No data found for that job id.\n"
    );
    assert_eq!(
        client.run(&["results", UNKNOWN_JOB]).stderr,
        "No results found for that job id.\n"
    );
    let artifacts = client.run(&["artifacts", UNKNOWN_JOB]);
    assert_eq!(
        artifacts.stderr,
        "No artifacts tarball found for that job id.\n"
    );
}

#[test]
fn a_dead_server_is_one_line_and_a_bad_address_is_refused() {
    let client = Client {
        server: "http://127.0.0.1:1".into(),
        home: tempfile::tempdir().unwrap(),
    };
    for args in [
        vec!["results", UNKNOWN_JOB],
        vec!["cancel", UNKNOWN_JOB],
        vec!["list-queues"],
        // Not "please provide credentials": the server is the problem, with or without.
        vec!["login"],
        vec!["login", "--client-id", "me", "--secret-key", "s3cret"],
    ] {
        let run = client.run(&args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        let last = run.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("Unable to communicate with specified server."),
            "{args:?}: {run:?}"
        );
        assert!(!run.stderr.contains("Traceback"));
    }
    // The soft failure the reference has for status: stdout, exit 0.
    let status = client.run(&["status", UNKNOWN_JOB]);
    assert_eq!(
        (status.code, status.stdout.as_str()),
        (0, "Unable to retrieve job state from the server, check your connection or try again later.\n")
    );
    let bad = Client {
        server: "ftp://x".into(),
        home: tempfile::tempdir().unwrap(),
    };
    let run = bad.run(&["status", UNKNOWN_JOB]);
    assert_eq!(
        run.stderr,
        "Server must start with \"http://\" or \"https://\" - currently set to: \"ftp://x\"\n"
    );
}

#[test]
fn config_sets_and_shows_settings_in_the_reference_file() {
    let server = Server::start();
    let client = Client::new(&server);
    assert_eq!(client.run(&["config", "client_id=me"]).stdout, "");
    assert_eq!(client.run(&["config", "server=http://h?a=b"]).stdout, "");
    assert_eq!(
        client.run(&["config", "client_id"]).stdout,
        "client_id = me\n"
    );
    assert_eq!(
        client.run(&["config", "nothing"]).stdout,
        "nothing = None\n"
    );
    assert_eq!(
        client.run(&["config"]).stdout,
        "Current Configuration\n---------------------\nclient_id = me\nserver = http://h?a=b\n\n"
    );
    let file = std::fs::read_to_string(client.config_dir().join("testflinger-cli.conf")).unwrap();
    assert_eq!(
        file,
        "[testflinger-cli]\nclient_id = me\nserver = http://h?a=b\n\n"
    );
}

#[test]
fn login_stores_the_refresh_token_where_the_reference_keeps_it() {
    let server = Server::start();
    let secret = server.add_client("dev", "contributor", &[]);
    let client = Client::new(&server);
    let good = client.run(&["login", "--client-id", "dev", "--secret-key", &secret]);
    assert_eq!(
        (good.code, good.stdout.as_str()),
        (0, "Successfully authenticated as 'dev'\n"),
        "{good:?}"
    );
    let stored = std::fs::read_to_string(
        client
            .config_dir()
            .join("testflinger-cli/127_0_0_1/auth.conf"),
    )
    .unwrap();
    assert!(
        stored.starts_with("[AUTH]\nclient_id = dev\nrefresh_token = "),
        "{stored}"
    );

    // Later commands use the stored token: a secret can be written without credentials.
    let written = client.run(&["secret", "write", "lab/token", "v4lue", "--single-use"]);
    assert_eq!(
        written.stdout,
        "Secret 'lab/token' written successfully\nThis secret will be deleted after first use\n",
        "{written:?}"
    );
    let deleted = client.run(&["secret", "delete", "lab/token"]);
    assert_eq!(deleted.stdout, "Secret 'lab/token' deleted successfully\n");

    let bad = client.run(&["login", "--client-id", "dev", "--secret-key", "wrong"]);
    assert_eq!(
        (bad.code, bad.stderr.as_str()),
        (
            1,
            "Authentication with Testflinger server failed. Check your client id and secret key\n"
        )
    );
    let half = client.run(&["login", "--client-id", "dev"]);
    assert_eq!(half.code, 2);
    assert!(half
        .stderr
        .contains("Both --client-id and --secret-key must be provided together"));
    let bad_path = client.run(&["secret", "write", "/abs", "v"]);
    assert_eq!(bad_path.code, 2);
    assert!(bad_path.stderr.contains("not a valid path"));
}

#[test]
fn the_reference_names_and_help_work() {
    let server = Server::start();
    let client = Client::new(&server);
    let status = client.run_as("testflinger-cli", &["status", UNKNOWN_JOB]);
    assert_eq!(status.code, 1);
    assert!(status.stderr.starts_with("No data found"), "{status:?}");
    let help = client.run_as("testflinger", &[]);
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("Usage: testflinger"),
        "{}",
        help.stdout
    );
    // Installed as the client, the help lists the client's commands only.
    assert!(help.stdout.contains("submit"));
    for other in ["serve", "backup", "clients", "demo", "device-connector"] {
        assert!(
            !help.stdout.contains(&format!("  {other} ")),
            "{other} in\n{}",
            help.stdout
        );
    }
    let unknown = client.run(&["frobnicate"]);
    assert_eq!(unknown.code, 2);
}

#[test]
fn tf_alone_prints_its_usage_and_exits_2() {
    let client = Client {
        server: "http://127.0.0.1:1".into(),
        home: tempfile::tempdir().unwrap(),
    };
    // `--server` alone is still no command.
    let run = client.run(&[]);
    assert_eq!((run.code, run.stdout.as_str()), (2, ""), "{run:?}");
    assert!(run.stderr.contains("Usage: tf"), "{}", run.stderr);
    let bare = std::process::Command::new(env!("CARGO_BIN_EXE_tf"))
        .output()
        .unwrap();
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("Usage: tf"));
}

#[test]
fn help_groups_the_commands_by_role_and_describes_every_argument() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_tf"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    // Each heading, then its commands, in this order.
    let mut rest = help.as_str();
    for (heading, commands) in [
        ("Lab server", &["serve", "clients", "backup"][..]),
        ("Agent", &["agent", "device-connector"][..]),
        (
            "User commands",
            &["submit", "poll", "status", "cancel", "reserve"][..],
        ),
        ("Options", &["--server"][..]),
    ] {
        let at = rest
            .find(&format!("\n{heading}"))
            .unwrap_or_else(|| panic!("no {heading} after the previous group in\n{help}"));
        let section = &rest[at + 1..];
        let end = section.find("\n\n").unwrap_or(section.len());
        for command in commands {
            assert!(
                section[..end].contains(&format!("  {command} ")),
                "{command} not under {heading} in\n{help}"
            );
        }
        rest = &section[end..];
    }
    assert!(
        help.contains("https://testflinger.canonical.com"),
        "--server says its default:\n{help}"
    );
    for (command, argument) in [
        ("cancel", "<JOB_ID>"),
        ("submit", "<FILENAME>"),
        ("agent-status", "<AGENT_NAME>"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tf"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with(argument))
            .unwrap_or_else(|| panic!("{argument} in\n{text}"));
        assert!(
            line.trim_start()[argument.len()..].trim().len() > 5,
            "{argument} of {command} is described: {line:?}"
        );
    }
}

#[test]
fn cancel_confirms_under_tf_and_stays_silent_under_the_reference_names() {
    let server = Server::start();
    crate::client::register_agent(&server, "a1", "q");
    let client = Client::new(&server);
    let first = client.submit("job_queue: q\n");
    let cancel = client.run(&["cancel", &first]);
    assert_eq!(
        (cancel.code, cancel.stdout.as_str()),
        (0, format!("Job {first} cancelled\n").as_str())
    );
    let second = client.submit("job_queue: q\n");
    let silent = client.run_as("testflinger-cli", &["cancel", &second]);
    assert_eq!(
        (silent.code, silent.stdout.as_str(), silent.stderr.as_str()),
        (0, "", "")
    );
}

#[test]
fn completions_know_the_commands_and_the_job_ids() {
    let server = Server::start();
    let client = Client::new(&server);
    let bash = client.run(&["completions", "bash"]);
    assert!(bash.stdout.contains("poll-serial"));
    assert!(bash.stdout.contains("tf __job-ids"));
    let fish = client.run(&["completions", "fish"]);
    assert!(fish
        .stdout
        .contains("__fish_seen_subcommand_from artifacts cancel poll"));
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let server = Server::start();
    let client = Client::new(&server);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(["--server", &client.server, "config"])
        .env("XDG_CONFIG_HOME", client.config_dir())
        .env("RUST_BACKTRACE", "1")
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101));
}
