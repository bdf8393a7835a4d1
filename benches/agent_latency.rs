//! How quickly an idle `tf agent` reacts, measured end to end against `tf serve`:
//!
//!     cargo bench --bench agent_latency
//!
//! - submit → the setup phase's command starts (the command writes its start time);
//! - a line printed by a test command → readable on the server (a follower long-polls
//!   the log and compares each line's embedded print time with its arrival);
//! - submit → `complete` on the server for a trivial job.
//!
//! All times come from the same machine clock. Prints p50/p95/max of each.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use tf_test_support::agent::{wait_for_state, Agent};
use tf_test_support::server::Server;

const TRIVIAL_JOBS: usize = 20;
const PRINTED_LINES: usize = 50;

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn report(name: &str, mut samples_ms: Vec<f64>) {
    samples_ms.sort_by(f64::total_cmp);
    let at = |q: f64| samples_ms[((samples_ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<44} n={:<3} p50 {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms",
        samples_ms.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

fn main() {
    let server = Server::start();
    let temp = tempfile::tempdir().expect("temp dir");
    let started_file = temp.path().join("setup-started");
    let settings = format!(
        "setup_command: date +%s%N > {}\n\
         test_command: 'for i in $(seq 1 {PRINTED_LINES}); do date +%s%N; sleep 0.1; done'\n\
         cleanup_command: echo cleaned\n\
         polling_interval: 10\n",
        started_file.display()
    );
    let _agent = Agent::start(&server, &settings);
    // Let the agent register and settle into its long-poll.
    std::thread::sleep(Duration::from_millis(500));

    let mut to_setup = Vec::new();
    let mut to_complete = Vec::new();
    for _ in 0..TRIVIAL_JOBS {
        let _ = std::fs::remove_file(&started_file);
        let submitted = now_ns();
        let job_id = server.submit(&json!({"job_queue": "q"}));
        wait_for_state(&server, &job_id, &["complete"]);
        let completed = now_ns();
        let setup_started: i128 = std::fs::read_to_string(&started_file)
            .expect("the setup command ran")
            .trim()
            .parse()
            .expect("a timestamp");
        to_setup.push((setup_started - submitted) as f64 / 1e6);
        to_complete.push((completed - submitted) as f64 / 1e6);
        std::thread::sleep(Duration::from_millis(100));
    }

    // One job whose test prints its own timestamps; follow its log as `tf poll` would.
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "x"}}));
    let mut line_latency = Vec::new();
    let mut next_fragment = 0;
    while line_latency.len() < PRINTED_LINES {
        let path = format!(
            "/v1/result/{job_id}/log/output?phase=test&start_fragment={next_fragment}&wait=10"
        );
        let log: Value = server.get(&path).json();
        let arrived = now_ns();
        let Some(test) = log["output"]["test"].as_object() else {
            continue;
        };
        next_fragment = test["last_fragment_number"].as_i64().unwrap_or(0) + 1;
        for line in test["log_data"].as_str().unwrap_or_default().lines() {
            if let Ok(printed) = line.trim().parse::<i128>() {
                line_latency.push((arrived - printed) as f64 / 1e6);
            }
        }
    }
    wait_for_state(&server, &job_id, &["complete"]);

    println!("tf agent latency (idle agent, tf serve on the same machine)");
    report("submit -> setup command starts", to_setup);
    report("line printed -> readable on the server", line_latency);
    report("trivial job: submit -> complete", to_complete);
}
