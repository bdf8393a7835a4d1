//! The control-host hooks against a local stand-in for the control host's REST API.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::Bench;

/// A control-host API on a local port that answers 200 and records "METHOD /path".
fn control_api(state: &std::path::Path) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (record, off) = (seen.clone(), state.join("control-off"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let line: Vec<&str> = request.split_whitespace().take(2).collect();
            let line = line.join(" ");
            if line.ends_with("/poweroff") {
                std::fs::write(&off, "").unwrap();
            }
            record.lock().unwrap().push(line);
            let mut header = String::new();
            while reader
                .read_line(&mut header)
                .map(|n| n > 2)
                .unwrap_or(false)
            {
                header.clear();
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
    });
    (port, seen)
}

#[test]
fn the_control_host_is_power_cycled_and_set_up_before_provisioning() {
    let job = json!({"provision_data": {"url": "http://x"}});
    let bench = Bench::new("agent_name: a\n", &job);
    let (port, seen) = control_api(bench.state.path());
    let config = format!(
        "agent_name: a\ncontrol_host: 127.0.0.1\ncontrol_host_api_port: {port}\ncontrol_host_reboot_script: ['echo reboot >> {}/calls']\n",
        bench.state.path().display()
    );
    std::fs::write(bench.path("default.yaml"), config).unwrap();
    let ran = bench.run_with(
        &[
            "fake_connector",
            "provision",
            "-c",
            "default.yaml",
            "testflinger.json",
        ],
        &[("TF_CONNECTOR_NO_WAIT", "1")],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "POST /api/v1/system/poweroff",
            "GET /health",
            "POST /api/v1/system/setup/provisioning",
        ]
    );
    let calls = bench.calls();
    assert!(calls
        .iter()
        .any(|c| c.starts_with("ping -c 1 -W 3 127.0.0.1")));
    assert!(calls.contains(&"reboot".to_string()), "{calls:#?}");

    // Tests get their own set-up request.
    let test = Bench::new(
        "agent_name: a\n",
        &json!({"test_data": {"test_cmds": "true"}}),
    );
    std::fs::write(
        test.path("default.yaml"),
        format!("control_host: 127.0.0.1\ncontrol_host_api_port: {port}\n"),
    )
    .unwrap();
    assert_eq!(test.run("fake_connector", "runtest").code, 0);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        "POST /api/v1/system/setup/test"
    );
}

#[test]
fn without_its_api_the_control_host_is_rebooted_over_ssh() {
    let job = json!({"provision_data": {"url": "http://x"}});
    let bench = Bench::new("agent_name: a\n", &job);
    // Nothing listens on port 9: the API is down.
    let config = format!(
        "agent_name: a\ncontrol_host: 127.0.0.1\ncontrol_host_api_port: 9\ncontrol_host_reboot_script: ['touch {}/control-up']\n",
        bench.state.path().display()
    );
    std::fs::write(bench.path("default.yaml"), config).unwrap();
    let ran = bench.run_with(
        &[
            "fake_connector",
            "provision",
            "-c",
            "default.yaml",
            "testflinger.json",
        ],
        &[("TF_CONNECTOR_NO_WAIT", "1")],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        bench.state.path().join("control-up").exists(),
        "the reboot script ran"
    );
    let probes = bench
        .calls()
        .iter()
        .filter(|c| c.starts_with("nc -z -w 3 127.0.0.1 22"))
        .count();
    assert_eq!(probes, 2, "down, then back: {:#?}", bench.calls());
}
