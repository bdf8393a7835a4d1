//! The pages in a real browser: a running job's log follows live without a reload, list
//! pages pick up new jobs in place, and every page renders at desktop and phone widths.

use std::time::Instant;

use serde_json::json;

use tf_test_support::agent::{run_job, wait_for_state, wait_for_test_output, Agent};
use tf_test_support::server::Server;

use crate::chromium::{colours, Browser};

/// A test phase that prints a line, waits for `go` in its run directory's parent, prints
/// another, and waits for `finish` before it ends.
const TEST_COMMAND: &str = "echo first line; \
    while [ ! -e ../go ]; do sleep 0.05; done; echo 'second <b>line</b>'; \
    while [ ! -e ../finish ]; do sleep 0.05; done";

#[test]
fn a_running_jobs_page_shows_new_log_lines_without_a_reload() {
    let server = Server::start();
    let agent = Agent::start(&server, &format!("test_command: \"{TEST_COMMAND}\""));
    let job_id = server.submit(&json!({"job_queue": "q", "test_data": {"test_cmds": "unused"}}));
    wait_for_test_output(&server, &job_id, "first line");

    let mut browser = Browser::start();
    let url = format!("http://{}/jobs/{job_id}", server.address);
    browser.open(&url);
    let log = r#"(document.querySelector('pre[data-type="output"][data-phase="test"]') || {}).textContent || """#;
    assert!(browser.eval(log).as_str().unwrap().contains("first line"));
    // A reload would lose this.
    browser.eval("window.stillTheSamePage = true");

    let run_dir = agent.run_dir(&job_id);
    let printed = Instant::now();
    std::fs::write(run_dir.parent().unwrap().join("go"), "").unwrap();
    let text = browser.wait_for("the second line in the page", |browser| {
        let text = browser.eval(log);
        text.as_str()
            .filter(|text| text.contains("second"))
            .map(str::to_string)
    });
    // Printed for the closing note's latency figure; not asserted (no wall-clock checks).
    eprintln!(
        "line printed -> shown in the open page: {} ms",
        printed.elapsed().as_millis()
    );
    assert!(
        text.contains("second <b>line</b>"),
        "shown as text: {text:?}"
    );
    assert_eq!(browser.eval("window.stillTheSamePage"), json!(true));
    assert_eq!(
        browser.eval("document.querySelectorAll('b').length"),
        json!(0)
    );

    // No serial log yet: no serial section to see, until the first line arrives.
    let serial_shown = "getComputedStyle(document.getElementById('serial')).display !== 'none'";
    assert_eq!(browser.eval(serial_shown), json!(false));
    let fragment = json!({"fragment_number": 0, "timestamp": "2026-01-01T10:00:00", "phase": "test", "log_data": "console says hi\n"});
    let posted = server
        .agent()
        .post_json(&format!("/v1/result/{job_id}/log/serial"), &fragment);
    assert_eq!(posted.status, 200);
    browser.wait_for("the serial section with its first line", |browser| {
        let text = browser.eval("document.getElementById('serial').textContent");
        (browser.eval(serial_shown) == json!(true)
            && text
                .as_str()
                .is_some_and(|text| text.contains("console says hi")))
        .then_some(())
    });
    assert_eq!(browser.eval("window.stillTheSamePage"), json!(true));

    // The job ends: the page reloads itself once and shows the exit status.
    std::fs::write(run_dir.parent().unwrap().join("finish"), "").unwrap();
    wait_for_state(&server, &job_id, &["complete"]);
    browser.wait_for("the page to show the ended job", |browser| {
        let state = browser.eval("document.getElementById('job-state').textContent");
        let following = browser.eval("document.querySelector('.following') !== null");
        (state == json!("complete") && following == json!(false)).then_some(())
    });
    let facts = browser.eval("document.querySelector('dl.facts').textContent");
    let facts = facts.as_str().unwrap_or_default();
    assert!(
        facts.contains("Outcome") && facts.contains("passed"),
        "{facts}"
    );
    assert!(facts.contains("agent-1"), "{facts}");
}

#[test]
fn list_pages_pick_up_new_jobs_in_place() {
    let server = Server::start();
    let mut browser = Browser::start();
    browser.open(&format!("http://{}/jobs", server.address));
    browser.eval("window.stillTheSamePage = true");
    let job_id = server.submit(&json!({"job_queue": "fresh"}));
    browser.wait_for("the new job in the list", |browser| {
        let html = browser.eval("document.getElementById('job-list').innerHTML");
        html.as_str()
            .filter(|html| html.contains(&job_id))
            .map(|_| ())
    });
    assert_eq!(browser.eval("window.stillTheSamePage"), json!(true));
}

#[test]
fn every_page_renders_at_desktop_and_phone_widths() {
    let server = Server::start();
    let (agent, job_id, _) = run_job(
        &server,
        "test_command: echo hello from the test phase",
        &json!({"job_queue": "q", "name": "<script>document.title='owned'</script>", "test_data": {"test_cmds": "x"}}),
    );
    drop(agent);
    let pages = [
        ("overview", "/".to_string()),
        ("jobs", "/jobs".to_string()),
        ("job", format!("/jobs/{job_id}")),
        ("agents", "/agents".to_string()),
        ("agent", "/agents/agent-1".to_string()),
        ("queues", "/queues".to_string()),
        ("queue", "/queues/q".to_string()),
    ];
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = Browser::start();
    for (name, path) in pages {
        browser.open(&format!("http://{}{path}", server.address));
        assert_ne!(
            browser.eval("document.title"),
            json!("owned"),
            "{path} ran a job's script"
        );
        for (width, height, mobile, device) in
            [(1280, 800, false, "desktop"), (390, 844, true, "phone")]
        {
            let png = browser.screenshot(width, height, mobile);
            std::fs::write(shots.join(format!("{name}-{device}.png")), &png).unwrap();
            assert!(
                colours(&png, 16) >= 16,
                "{path} at {device} width looks blank"
            );
            // Nothing wider than the screen: a phone never scrolls sideways.
            let overflow = browser.eval("document.documentElement.scrollWidth - window.innerWidth");
            assert!(
                overflow.as_i64().unwrap() <= 0,
                "{path} at {device} width scrolls sideways by {overflow}"
            );
        }
    }
    eprintln!("screenshots in {}", shots.display());
}
