use serde_json::json;

use tf_test_support::server::Server;

#[test]
fn agents_report_and_are_listed_with_their_log_trimmed() {
    let server = Server::start();
    let first = server.agent().post_json(
        "/v1/agents/data/dev-1",
        &json!({"state": "waiting", "queues": ["q1", "q2"], "location": "lab", "log": ["boot"]}),
    );
    assert_eq!(first.status, 200);
    assert_eq!(first.json(), json!({"status": "OK"}));
    assert_eq!(
        first.header("set-cookie"),
        Some("agent_name=dev-1; HttpOnly; Path=/; SameSite=Strict")
    );
    let lines: Vec<String> = (0..150).map(|n| format!("line {n}")).collect();
    server.agent().post_json(
        "/v1/agents/data/dev-1",
        &json!({"state": "test", "job_id": "j", "log": lines}),
    );

    let agent = server.get("/v1/agents/data/dev-1").json();
    assert_eq!(agent["state"], json!("test"));
    assert_eq!(
        agent["location"],
        json!("lab"),
        "fields not re-sent are kept"
    );
    assert_eq!(agent["queues"], json!(["q1", "q2"]));
    assert_eq!(agent["restricted_to"], json!({}));
    assert!(agent["updated_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        agent.get("log").is_none(),
        "the log is not part of the agent document"
    );

    let all = server.get("/v1/agents/data").json();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let missing = server.get("/v1/agents/data/ghost");
    assert_eq!((missing.status, missing.json()), (404, json!({})));

    let bad = server.agent().post_json(
        "/v1/agents/data/dev-1",
        &json!({"queues": "q1", "extra": 1}),
    );
    assert_eq!(bad.status, 422);
    assert_eq!(
        bad.json()["detail"]["json"],
        json!({"queues": ["Not a valid list."], "extra": ["Unknown field."]})
    );
}

#[test]
fn queue_agents_shows_the_short_form_and_404s_unknown_queues() {
    let server = Server::start();
    server.agent().post_json(
        "/v1/agents/data/dev-1",
        &json!({"state": "waiting", "queues": ["q1"], "identifier": "id"}),
    );
    let agents = server.get("/v1/queues/q1/agents");
    assert_eq!(
        agents.json(),
        json!([{"name": "dev-1", "state": "waiting", "queues": ["q1"]}])
    );
    let unknown = server.get("/v1/queues/nobody/agents");
    assert_eq!(
        (unknown.status, unknown.json()["message"].clone()),
        (404, json!("Queue 'nobody' does not exist."))
    );
}

#[test]
fn provision_logs_keep_a_pass_fail_streak() {
    let server = Server::start();
    let log = |code: i64| {
        server.agent().post_json(
            "/v1/agents/provision_logs/dev-1",
            &json!({"job_id": "j", "exit_code": code, "detail": "d"}),
        )
    };
    let orphan = log(0);
    assert_eq!(
        (orphan.status, orphan.text()),
        (404, "Agent not found\n".to_string())
    );
    server
        .agent()
        .post_json("/v1/agents/data/dev-1", &json!({"state": "waiting"}));
    for code in [1, 1, 0, 0, 0] {
        assert_eq!(log(code).text(), "OK");
    }
    let agent = server.get("/v1/agents/data/dev-1").json();
    assert_eq!(
        (
            agent["provision_streak_type"].clone(),
            agent["provision_streak_count"].clone()
        ),
        (json!("pass"), json!(3))
    );
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/provision_logs/dev-1", &json!({"job_id": "j"}))
            .status,
        422
    );
}

#[test]
fn a_job_that_did_not_provision_is_no_provision_attempt() {
    let server = Server::start();
    server
        .agent()
        .post_json("/v1/agents/data/dev-1", &json!({"state": "waiting"}));
    // As agents report: the phase's status (only when it ran), then the provision log
    // (always, a skipped provision as a success).
    let job = |status: serde_json::Value, exit_code: i64| {
        let id = server.submit(&json!({"job_queue": "q"}));
        server.claim("dev-1", "q").unwrap();
        let agent = server.agent();
        agent.post_json(&format!("/v1/result/{id}"), &json!({ "status": status }));
        let entry = json!({"job_id": id, "exit_code": exit_code, "detail": "provision_success"});
        let logged = agent.post_json("/v1/agents/provision_logs/dev-1", &entry);
        assert_eq!(logged.text(), "OK");
        id
    };
    let streak = || {
        let agent = server.get("/v1/agents/data/dev-1").json();
        (
            agent["provision_streak_type"].clone(),
            agent["provision_streak_count"].clone(),
        )
    };
    let provisioned = job(json!({"setup": 0, "provision": 0}), 0);
    let failed = job(json!({"setup": 0, "provision": 1}), 1);
    assert_eq!(streak(), (json!("fail"), json!(1)));
    let skipped = job(json!({"setup": 0, "test": 0}), 0);
    assert_eq!(streak(), (json!("fail"), json!(1)), "a skipped provision");

    let page = server.get("/agents/dev-1").text();
    let history = &page[page.find("Provision history").unwrap()..];
    assert!(history.contains(&provisioned) && history.contains(&failed));
    assert!(!history.contains(&skipped), "{history}");
    assert!(history.contains("50% of the last 2 passed"), "{history}");
}

#[test]
fn queues_and_images_are_advertised() {
    let server = Server::start();
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/queues", &json!({"q1": "Pi 4", "q2": ""}))
            .text(),
        "OK"
    );
    assert_eq!(
        server.get("/v1/agents/queues").json(),
        json!({"q1": "Pi 4", "q2": ""})
    );
    let empty_name = server
        .agent()
        .post_json("/v1/agents/queues", &json!({"": "x"}));
    assert_eq!(
        empty_name.json()["detail"]["json"]["_schema"],
        json!(["Queue names must be non-empty strings"])
    );
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/queues", &json!({"q": 1}))
            .status,
        422
    );
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/queues", &json!(["q"]))
            .status,
        422
    );

    let images = json!({"q1": {"jammy": "url: http://example.com/jammy.img.xz"}});
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/images", &images)
            .text(),
        "OK"
    );
    assert_eq!(server.get("/v1/agents/images/q1").json(), images["q1"]);
    assert_eq!(server.get("/v1/agents/images/unknown").json(), json!({}));
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/images", &json!({"q1": {"a.b": "x"}}))
            .status,
        422
    );
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/images", &json!({"q1": {"$x": "x"}}))
            .status,
        422
    );
    assert_eq!(
        server
            .agent()
            .post_json("/v1/agents/images", &json!({"q1": {"x": 1}}))
            .status,
        422
    );
    assert_eq!(
        server.get("/v1/agents/queues").json()["q1"],
        json!("Pi 4"),
        "images keep the description"
    );
}

#[test]
fn wait_times_and_queue_jobs() {
    let server = Server::start();
    assert_eq!(server.get("/v1/queues/q/jobs").status, 204);
    let id = server.submit(&json!({"job_queue": "q"}));
    server.submit(&json!({"job_queue": "other"}));
    server.claim("a", "q");
    let jobs = server.get("/v1/queues/q/jobs").json();
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["job_id"], json!(id));
    assert_eq!(jobs[0]["job_state"], json!("running"));
    assert_eq!(jobs[0]["job_queue"], json!("q"));

    let waits = server.get("/v1/queues/wait_times").json();
    assert_eq!(
        waits,
        json!({"q": {"5": 0, "10": 0, "50": 0, "90": 0, "95": 0}})
    );
    assert_eq!(
        server.get("/v1/queues/wait_times?queue=other").json(),
        json!({})
    );
}

#[test]
fn listings_keep_agents_in_order_and_include_image_only_queues() {
    let server = Server::start();
    for agent in ["zeta", "alpha", "mid"] {
        server.agent().post_json(
            &format!("/v1/agents/data/{agent}"),
            &json!({"state": "waiting"}),
        );
    }
    server
        .agent()
        .post_json("/v1/agents/data/zeta", &json!({"state": "test"}));
    let names: Vec<_> = server
        .get("/v1/agents/data")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![json!("zeta"), json!("alpha"), json!("mid")],
        "first report decides the order"
    );

    server.agent().post_json(
        "/v1/agents/images",
        &json!({"imgq": {"noble": "url: http://example.com/n.img"}}),
    );
    assert_eq!(server.get("/v1/agents/queues").json(), json!({"imgq": ""}));
}
