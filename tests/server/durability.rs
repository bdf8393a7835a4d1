use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use tf_test_support::http::send;
use tf_test_support::server::Server;

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    let address = server.address.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged_jobs = Arc::new(Mutex::new(Vec::new()));
    let acknowledged_fragments = Arc::new(Mutex::new(Vec::new()));
    let log_job = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    let agent = server.agent();
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (address, stop, agent) = (address.clone(), stop.clone(), agent.clone());
        let (jobs, fragments) = (acknowledged_jobs.clone(), acknowledged_fragments.clone());
        writers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let outcome = if writer % 2 == 0 {
                    let body = json!({"job_queue": "durable", "name": format!("w{writer}-{n}")}).to_string();
                    send(&address, "POST", "/v1/job", &[("Content-Type", "application/json")], body.as_bytes())
                        .ok()
                        .filter(|r| r.status == 200)
                        .map(|r| jobs.lock().unwrap().push(r.json()["job_id"].as_str().unwrap().to_string()))
                } else {
                    let number = writer * 1_000_000 + n;
                    let body = json!({"fragment_number": number, "timestamp": "2026-01-01T00:00:00", "phase": "test", "log_data": format!("<{number}>")}).to_string();
                    agent.try_request("POST", &format!("/v1/result/{log_job}/log/output"), &[("Content-Type", "application/json")], body.as_bytes())
                        .ok()
                        .filter(|r| r.status == 200)
                        .map(|_| fragments.lock().unwrap().push(number))
                };
                if outcome.is_none() && stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }));
    }
    // Let the writers get going, then kill the server in the middle of their traffic.
    while acknowledged_jobs.lock().unwrap().len() < 300
        || acknowledged_fragments.lock().unwrap().len() < 300
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    server.kill();
    for writer in writers {
        writer.join().unwrap();
    }

    let restarted = Server::start_in(data.path(), &[]);
    let stored: HashSet<String> = restarted
        .get("/v1/job/search")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["job_id"].as_str().unwrap().to_string())
        .collect();
    let jobs = acknowledged_jobs.lock().unwrap();
    let lost: Vec<_> = jobs.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged jobs lost",
        lost.len(),
        jobs.len()
    );

    let log = restarted
        .get(&format!("/v1/result/{log_job}/log/output?phase=test"))
        .json();
    let text = log["output"]["test"]["log_data"]
        .as_str()
        .unwrap()
        .to_string();
    let fragments = acknowledged_fragments.lock().unwrap();
    let missing: Vec<_> = fragments
        .iter()
        .filter(|n| !text.contains(&format!("<{n}>")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged fragments lost",
        missing.len(),
        fragments.len()
    );
}

#[test]
fn each_job_goes_to_exactly_one_of_many_concurrent_claimers() {
    const JOBS: usize = 3000;
    const CLAIMERS: usize = 60;
    let server = Server::start();
    let submitters: Vec<_> = (0..6)
        .map(|_| {
            let address = server.address.clone();
            std::thread::spawn(move || {
                for _ in 0..JOBS / 6 {
                    let body = json!({"job_queue": "busy"}).to_string();
                    let response = send(
                        &address,
                        "POST",
                        "/v1/job",
                        &[("Content-Type", "application/json")],
                        body.as_bytes(),
                    )
                    .unwrap();
                    assert_eq!(response.status, 200);
                }
            })
        })
        .collect();
    submitters.into_iter().for_each(|t| t.join().unwrap());

    let claimers: Vec<_> = (0..CLAIMERS)
        .map(|n| {
            let agent = server.agent();
            std::thread::spawn(move || {
                let cookie = format!("agent_name=agent-{n}");
                let mut mine = Vec::new();
                loop {
                    let response =
                        agent.request("GET", "/v1/job?queue=busy", &[("Cookie", &cookie)], b"");
                    match response.status {
                        200 => mine.push(response.json()["job_id"].as_str().unwrap().to_string()),
                        204 => return mine,
                        other => panic!("claim answered {other}"),
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.join().unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed once");
    assert_eq!(unique.len(), JOBS, "no job claimed twice");
    assert!(server
        .get("/v1/job/search?state=active")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["job_state"] == "running"));
}
