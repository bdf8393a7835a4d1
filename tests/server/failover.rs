//! Faults with real parts: a PostgreSQL primary and its streaming standby, three `tf
//! serve` replicas on them (a multi-host URL with `target_session_attrs=read-write`) and
//! HAProxy in front, every client going through HAProxy as in a lab. A replica is
//! killed during long-polls, another during log and artifact uploads, then the primary
//! is stopped and the standby promoted; the lab carries on through the last replica, no
//! job is claimed twice and nothing acknowledged is lost.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use tf_test_support::haproxy::Haproxy;
use tf_test_support::http::Caller;
use tf_test_support::postgres::{keep_records_in, Postgres};
use tf_test_support::server::Server;
use tf_test_support::wait::wait_for;

/// What an agent does: claims a job of `queue`, long-polling, and polls again after an
/// error (a replica gone, the database switching over) as the reference agent does.
fn claim_as_an_agent(agent: &Caller, name: &str, queue: &str) -> String {
    let cookie = format!("agent_name={name}");
    wait_for("a job for the agent", || {
        let answer = agent
            .try_request(
                "GET",
                &format!("/v1/job?queue={queue}&wait=5"),
                &[("Cookie", &cookie)],
                b"",
            )
            .ok()?;
        match answer.status {
            200 => Some(answer.json()["job_id"].as_str()?.to_string()),
            _ => {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        }
    })
}

/// Submits as a client that retries until its job is acknowledged; what it was answered
/// meanwhile is added to `seen`.
fn submit_until_acknowledged(user: &Caller, queue: &str, seen: &mut Vec<u16>) -> String {
    wait_for("the job to be acknowledged", || {
        let job = json!({"job_queue": queue});
        let answer = user
            .try_request(
                "POST",
                "/v1/job",
                &[("Content-Type", "application/json")],
                job.to_string().as_bytes(),
            )
            .ok()?;
        if answer.status == 200 {
            return Some(answer.json()["job_id"].as_str()?.to_string());
        }
        seen.push(answer.status);
        std::thread::sleep(Duration::from_millis(100));
        None
    })
}

#[test]
fn the_lab_carries_on_through_a_dead_replica_and_a_database_failover() {
    let primary = Postgres::start();
    primary.create_database("lab");
    let standby = primary.standby();
    let url = format!(
        "postgres://tf@127.0.0.1:{},127.0.0.1:{}/lab?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let lab = tempfile::tempdir().expect("temp dir");
    keep_records_in(lab.path(), &url);
    let mut replicas: Vec<Server> = (0..3).map(|_| Server::start_in(lab.path(), &[])).collect();
    let addresses: Vec<&str> = replicas.iter().map(|r| r.address.as_str()).collect();
    let proxy = Haproxy::start(&addresses);
    let user = proxy.caller(None);
    let secret = replicas[0].add_client("ha-agent", "agent", &[]);
    let token = user.login("ha-agent", &secret)["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let agent = proxy.caller(Some(&token));

    // A replica dies while three agents long-poll (HAProxy spreads them over the three).
    let (claimed, claims) = mpsc::channel();
    let pollers: Vec<_> = (0..3)
        .map(|n| {
            let (agent, claimed) = (agent.clone(), claimed.clone());
            std::thread::spawn(move || {
                let id = claim_as_an_agent(&agent, &format!("agent-{n}"), "lab");
                claimed.send(id).unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    replicas.remove(0).kill();
    let mut answers_meanwhile = Vec::new();
    let submitted: HashSet<String> = (0..3)
        .map(|_| submit_until_acknowledged(&user, "lab", &mut answers_meanwhile))
        .collect();
    for poller in pollers {
        poller.join().expect("an agent");
    }
    let got: Vec<String> = claims.try_iter().collect();
    assert_eq!(
        got.iter().collect::<HashSet<_>>(),
        submitted.iter().collect::<HashSet<_>>(),
        "each job to one agent: {got:?}"
    );
    assert_eq!(got.len(), 3, "a job was claimed twice: {got:?}");

    // Another replica dies while an agent sends a log and uploads artifacts: every
    // fragment and artifact acknowledged is kept.
    let (logged, artifacts) = (got[0].clone(), got[1].clone());
    let writer = {
        let (agent, logged, artifacts) = (agent.clone(), logged.clone(), artifacts.clone());
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for n in 0..40 {
                let fragment = json!({"fragment_number": n, "phase": "test",
                    "timestamp": "2026-12-03T00:00:00+00:00", "log_data": format!("line {n}\n")});
                let sent = agent
                    .try_request(
                        "POST",
                        &format!("/v1/result/{logged}/log/output"),
                        &[("Content-Type", "application/json")],
                        fragment.to_string().as_bytes(),
                    )
                    .is_ok_and(|answer| answer.status == 200);
                let content = format!("artifact {n}");
                let uploaded = agent
                    .try_upload(
                        &format!("/v1/result/{artifacts}/artifact"),
                        "file",
                        content.as_bytes(),
                    )
                    .is_ok_and(|answer| answer.status == 200);
                acknowledged.push((n, sent, uploaded.then_some(content)));
                std::thread::sleep(Duration::from_millis(10));
            }
            acknowledged
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    replicas.remove(0).kill();
    let acknowledged = writer.join().expect("the agent");
    let log = user.get(&format!("/v1/result/{logged}/log/output")).json()["output"]["test"]
        ["log_data"]
        .as_str()
        .expect("the test phase's log")
        .to_string();
    for (n, _, _) in acknowledged.iter().filter(|(_, sent, _)| *sent) {
        assert!(
            log.contains(&format!("line {n}\n")),
            "fragment {n} lost: {log}"
        );
    }
    let last_artifact = acknowledged
        .iter()
        .rev()
        .find_map(|(_, _, content)| content.clone());
    let downloaded = user.get(&format!("/v1/result/{artifacts}/artifact"));
    assert_eq!(
        Some(downloaded.body),
        last_artifact.map(String::into_bytes),
        "the last artifact acknowledged"
    );

    // The database is switched over: the primary stops, the standby is promoted.
    let before = submit_until_acknowledged(&user, "lab", &mut answers_meanwhile);
    primary.stop();
    let refused = user.post_json("/v1/job", &json!({"job_queue": "lab"}));
    assert_eq!(refused.status, 503, "{}", refused.text());
    standby.promote();
    let mut during_switch = Vec::new();
    let after = submit_until_acknowledged(&user, "lab", &mut during_switch);
    assert!(
        during_switch.iter().all(|&status| status == 503),
        "between the stop and the promotion clients see 503 only: {during_switch:?}"
    );
    let mut claimed_after: Vec<String> = (0..2)
        .map(|n| claim_as_an_agent(&agent, &format!("agent-{n}"), "lab"))
        .collect();
    claimed_after.sort();
    let mut expected = vec![before, after];
    expected.sort();
    assert_eq!(
        claimed_after, expected,
        "the job acknowledged before the switch is kept"
    );

    // Wake-ups between the replicas work again on the new primary.
    let waiting = {
        let agent = agent.clone();
        std::thread::spawn(move || claim_as_an_agent(&agent, "agent-late", "late"))
    };
    std::thread::sleep(Duration::from_millis(300));
    let late = submit_until_acknowledged(&user, "late", &mut answers_meanwhile);
    assert_eq!(waiting.join().expect("the agent"), late);
}
