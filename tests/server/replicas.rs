//! Several `tf serve` replicas on one PostgreSQL database and one data dir (a host's disk
//! or a shared mount), with clients spread over them: what one replica accepts, the
//! others serve; each job goes to one agent; a replica killed mid-traffic loses nothing
//! acknowledged.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tf_test_support::http::Caller;
use tf_test_support::postgres::{keep_records_in, Postgres};
use tf_test_support::server::Server;
use tf_test_support::tf_binary;

/// `count` replicas on one data dir whose records are in `cluster`'s database `lab`.
fn replicas(cluster: &Postgres, data_dir: &std::path::Path, count: usize) -> Vec<Server> {
    keep_records_in(data_dir, &cluster.create_database("lab"));
    (0..count)
        .map(|_| Server::start_in(data_dir, &[]))
        .collect()
}

/// An agent client's callers, one per replica, all with the token one replica issued.
fn agent_on_every_replica(replicas: &[Server]) -> Vec<Caller> {
    let secret = replicas[0].add_client("spread-agent", "agent", &[]);
    let token = replicas[0].login("spread-agent", &secret)["access_token"]
        .as_str()
        .expect("a token")
        .to_string();
    replicas.iter().map(|r| r.with_token(&token)).collect()
}

/// Claims a job of `queue` as `agent`, waiting up to `wait` seconds; its id, or `None`.
fn claim(caller: &Caller, agent: &str, queue: &str, wait: u32) -> Option<String> {
    let cookie = format!("agent_name={agent}");
    let response = caller.request(
        "GET",
        &format!("/v1/job?queue={queue}&wait={wait}"),
        &[("Cookie", &cookie)],
        b"",
    );
    match response.status {
        200 => Some(response.json()["job_id"].as_str().expect("job_id").into()),
        204 => None,
        other => panic!("claim answered {other}: {}", response.text()),
    }
}

#[test]
fn replicas_share_a_data_dir_leave_each_others_uploads_and_exclude_a_sqlite_server() {
    let cluster = Postgres::start();
    let lab = tempfile::tempdir().expect("temp dir");
    let mut replicas = replicas(&cluster, lab.path(), 2);
    // Replica 1 restarts, while replica 0 receives an upload and one was cut off long ago.
    let incoming = lab.path().join("blobs/incoming");
    let (in_progress, cut_off) = (incoming.join("in-progress"), incoming.join("cut-off"));
    std::fs::write(&in_progress, b"half an archive").unwrap();
    std::fs::write(&cut_off, b"a third of an archive").unwrap();
    let touched = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&cut_off)
        .status()
        .expect("touch");
    assert!(touched.success());
    replicas.pop().expect("replica 1").kill();
    replicas.push(Server::start_in(lab.path(), &[]));
    assert!(in_progress.exists(), "another replica's upload was deleted");
    assert!(!cut_off.exists(), "an upload cut off an hour ago was kept");

    let alone = Command::new(tf_binary())
        .env_remove("TF_DATABASE")
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(lab.path())
        .output()
        .expect("run tf serve");
    assert!(!alone.status.success());
    let said = String::from_utf8_lossy(&alone.stderr);
    assert!(said.contains("is using the data dir"), "{said}");
    drop(replicas);
}

#[test]
fn a_job_submitted_on_one_replica_reaches_an_agent_waiting_on_another() {
    let cluster = Postgres::start();
    let lab = tempfile::tempdir().expect("temp dir");
    let replicas = replicas(&cluster, lab.path(), 3);
    let agents = agent_on_every_replica(&replicas);
    let waiting_agent = agents[2].clone();
    // The claim finds nothing and waits on replica 2 (its whole wait, if nothing came).
    let waiting = std::thread::spawn(move || claim(&waiting_agent, "far", "far", 60));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let id = replicas[0].submit(&json!({"job_queue": "far"}));
    assert_eq!(waiting.join().unwrap(), Some(id.clone()));
    // Its log, sent through replica 1, is read through replica 0.
    let fragment = json!({"fragment_number": 0, "timestamp": "2026-12-03T00:00:00+00:00",
                          "phase": "test", "log_data": "hello from afar\n"});
    let sent = agents[1].post_json(&format!("/v1/result/{id}/log/output"), &fragment);
    assert_eq!(sent.status, 200, "{}", sent.text());
    let log = replicas[0].get(&format!("/v1/result/{id}/log/output"));
    assert!(log.text().contains("hello from afar"), "{}", log.text());
}

#[test]
fn jobs_spread_over_replicas_go_each_to_one_agent_and_a_killed_replica_loses_none() {
    let cluster = Postgres::start();
    let lab = tempfile::tempdir().expect("temp dir");
    let mut replicas = replicas(&cluster, lab.path(), 3);
    let agents = agent_on_every_replica(&replicas);
    let submitted: Vec<String> = (0..60)
        .map(|n| replicas[n % 3].submit(&json!({"job_queue": "spread"})))
        .collect();

    // Six agents, two per replica, claim until the queue is empty; replica 2 is killed
    // as they go, and its agents carry on through replica 0.
    let claimed = Arc::new(Mutex::new(Vec::new()));
    let claimers: Vec<_> = (0..6)
        .map(|n| {
            let (mine, fallback) = (agents[n % 3].clone(), agents[0].clone());
            let claimed = claimed.clone();
            std::thread::spawn(move || loop {
                let cookie = format!("agent_name=agent-{n}");
                let answer = mine
                    .try_request("GET", "/v1/job?queue=spread", &[("Cookie", &cookie)], b"")
                    .ok()
                    .filter(|response| response.status != 502);
                let id = match answer {
                    Some(response) if response.status == 204 => return,
                    Some(response) => {
                        assert_eq!(response.status, 200, "{}", response.text());
                        response.json()["job_id"].as_str().unwrap().to_string()
                    }
                    // The replica is gone: this agent moves to another.
                    None => match claim(&fallback, &format!("agent-{n}"), "spread", 0) {
                        Some(id) => id,
                        None => return,
                    },
                };
                claimed.lock().unwrap().push(id);
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    replicas.pop().expect("replica 2").kill();
    // A job submitted on a surviving replica after the kill is there too.
    let late = replicas[1].submit(&json!({"job_queue": "spread"}));
    for claimer in claimers {
        claimer.join().expect("a claimer");
    }
    let mut claimed = claimed.lock().unwrap().clone();
    // The late job may have arrived after every claimer saw the queue empty.
    if !claimed.contains(&late) {
        claimed.extend(claim(&agents[0], "agent-last", "spread", 0));
    }
    let once: HashSet<&String> = claimed.iter().collect();
    assert_eq!(once.len(), claimed.len(), "a job was claimed twice");
    let mut expected: HashSet<&String> = submitted.iter().collect();
    expected.insert(&late);
    assert!(once.is_subset(&expected), "a job nobody submitted");
    // A claim the killed replica committed as it died never reached its agent: the job
    // is taken (it would be given back by the agent's timeout), not lost.
    let unanswered: Vec<&&String> = expected.difference(&once).collect();
    assert!(
        unanswered.len() <= 2,
        "more claims lost than were in flight: {unanswered:?}"
    );
    for id in unanswered {
        let state = replicas[0].get(&format!("/v1/result/{id}")).json()["job_state"].clone();
        assert_ne!(state, "waiting", "job {id} was never claimed");
    }
}

#[test]
fn failed_logins_through_any_replica_count_together() {
    let cluster = Postgres::start();
    let lab = tempfile::tempdir().expect("temp dir");
    let replicas = replicas(&cluster, lab.path(), 2);
    replicas[0].add_client("guarded", "contributor", &[]);
    let guess = |replica: &Server| replica.try_login("guarded", "not-the-secret").status;
    // Five guesses, spread over the replicas: each of them is refused.
    for n in 0..5 {
        assert_eq!(guess(&replicas[n % 2]), 401, "guess {n}");
    }
    // The sixth is one too many, whichever replica it reaches.
    assert_eq!(guess(&replicas[1]), 429);
    assert_eq!(guess(&replicas[0]), 429);
}
