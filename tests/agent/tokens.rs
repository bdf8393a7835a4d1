//! The agent's token file: enrolled with `tf clients add --token-file`, renewed by the
//! agent itself before it expires.

use std::os::unix::fs::MetadataExt;

use serde_json::{json, Value};

use tf_test_support::agent::{wait_for_state, Agent};
use tf_test_support::server::Server;
use tf_test_support::tf_clients;
use tf_test_support::wait::wait_for;

fn refresh_token(file: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let content: Value = serde_json::from_str(&text).ok()?;
    content["refresh_token"].as_str().map(str::to_string)
}

#[test]
fn an_agent_renews_its_refresh_token_and_outlives_the_first_one() {
    let server = Server::start_with(&[
        "--access-token-lifetime",
        "1s",
        "--refresh-token-lifetime",
        "4s",
        "--jwt-leeway",
        "0",
    ]);
    let home = tempfile::tempdir().unwrap();
    let mut agent = Agent::configure(home.path(), &server, "");
    tf_clients(
        &server.data_dir,
        &[
            "add",
            "renewing-agent",
            "--role",
            "agent",
            "--refresh-token-lifetime",
            "4s",
            "--token-file",
            agent.token_file.to_str().unwrap(),
        ],
    );
    let first = refresh_token(&agent.token_file).expect("a token file");
    let first_inode = std::fs::metadata(&agent.token_file).unwrap().ino();
    agent.spawn(&[]);

    // Renewed: a new file renamed into place (a new inode), private like the first.
    let renewed = wait_for("the agent to renew its refresh token", || {
        let token = refresh_token(&agent.token_file)?;
        (token != first).then_some(token)
    });
    let file = std::fs::metadata(&agent.token_file).unwrap();
    assert_ne!(file.ino(), first_inode, "replaced in one step");
    assert_eq!(file.mode() & 0o777, 0o600);
    assert!(!renewed.is_empty());

    wait_for("the first refresh token to expire", || {
        let refreshed = server.post_json("/v1/oauth2/refresh", &json!({"refresh_token": first}));
        (refreshed.json()["message"] == json!("Refresh token expired")).then_some(())
    });
    let job_id = server.submit(&json!({"job_queue": "q"}));
    wait_for_state(&server, &job_id, &["complete"]);
    assert!(
        !agent.log().contains("Failed to refresh"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_refused_refresh_token_points_at_a_new_token_for_the_agent_alone() {
    let server = Server::start();
    let home = tempfile::tempdir().unwrap();
    let mut agent = Agent::configure(home.path(), &server, "");
    std::fs::write(
        &agent.token_file,
        json!({"refresh_token": "x".repeat(48)}).to_string(),
    )
    .unwrap();
    agent.spawn(&[]);
    wait_for("the agent to report the refused token", || {
        agent.log().contains("Failed to refresh").then_some(())
    });
    let log = agent.log();
    assert!(
        log.contains("tf clients token CLIENT --token-file"),
        "{log}"
    );
    assert!(!log.contains("rotate-secret"), "{log}");
}
