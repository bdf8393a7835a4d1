use std::process::Command;

use serde_json::json;

use tf_test_support::http::Response;
use tf_test_support::server::Server;
use tf_test_support::tf;

#[test]
fn sigterm_stops_cleanly_and_keeps_the_data() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let id = server.submit(&json!({"job_queue": "q"}));
    assert!(server.terminate(), "tf serve exits 0 on SIGTERM");
    let again = Server::start_in(data.path(), &[]);
    assert_eq!(again.get(&format!("/v1/job/{id}")).status, 200);
}

#[test]
fn settings_come_from_a_config_file() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("tf.yaml");
    std::fs::write(&config, "max_body_size: 100\nretention: 2d\n").unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    let padding = "x".repeat(200);
    assert_eq!(
        server
            .post_json("/v1/job", &json!({"job_queue": "q", "name": padding}))
            .status,
        413
    );
}

#[test]
fn bad_settings_are_reported_with_their_source() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("tf.yaml");
    std::fs::write(&config, "max_body_sise: 100\n").unwrap();
    let output = tf(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("invalid config file") && message.contains("max_body_sise"),
        "{message}"
    );

    let output = tf(&["serve", "--bind", "nowhere"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--bind"));

    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = occupied.local_addr().unwrap().to_string();
    let output = tf(&[
        "serve",
        "--bind",
        &address,
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!("cannot listen on {address}"))
    );
}

#[test]
fn a_port_in_use_fails_before_anything_is_created() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = occupied.local_addr().unwrap().to_string();
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("lab");
    let output = tf(&[
        "serve",
        "--bind",
        &address,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(
        !data_dir.exists(),
        "no data dir, keys or database for a server that never ran"
    );
}

#[test]
fn the_log_has_no_colour_codes_when_stderr_is_not_a_terminal() {
    let server = Server::start();
    assert!(
        server.startup_log.contains("listening on"),
        "{}",
        server.startup_log
    );
    assert!(
        !server.startup_log.contains('\x1b'),
        "{:?}",
        server.startup_log
    );
}

#[test]
fn help_lists_the_roles_that_exist() {
    let output = tf(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("serve"), "{help}");
    let serve_help = String::from_utf8_lossy(&tf(&["serve", "--help"]).stdout).into_owned();
    for flag in [
        "--bind",
        "--data-dir",
        "--config",
        "--retention",
        "--max-body-size",
        "--sync",
    ] {
        assert!(
            serve_help.contains(flag),
            "{flag} missing from serve --help"
        );
    }
}

#[test]
fn the_binary_installed_as_testflinger_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let alias = dir.path().join("testflinger-server");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tf"), &alias).unwrap();
    let output = Command::new(&alias).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("--data-dir") && help.contains("--bind"),
        "{help}"
    );
}

#[test]
fn every_answer_carries_a_request_id_for_the_logs() {
    let server = Server::start();
    let first = server.get("/v1/");
    let second = server.get("/v1/job/search");
    let id = |response: &Response| -> u64 {
        response
            .header("x-request-id")
            .expect("x-request-id")
            .parse()
            .unwrap()
    };
    assert!(id(&second) > id(&first));
    assert!(
        server.get("/nowhere").header("x-request-id").is_some(),
        "errors carry one too"
    );
}

#[test]
fn stopping_ends_long_polls_instead_of_waiting_for_them() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let agent = server.agent();
    let waiter = std::thread::spawn(move || {
        agent.request(
            "GET",
            "/v1/job?queue=idle&wait=60",
            &[("Cookie", "agent_name=w")],
            b"",
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert!(server.terminate());
    let answer = waiter.join().unwrap();
    assert_eq!(
        answer.status, 204,
        "the waiting agent gets the empty answer"
    );
    // Not a speed assertion: a shutdown that waited for the poll would take a minute.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
