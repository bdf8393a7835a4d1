//! `tf demo`: a whole lab in one command, which cleans up after itself (but for the
//! artifacts asked for), or keeps running with `--keep` for the user to try things on.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tf_test_support::wait::eventually;

/// Empty directories for the demo's temp files, home and working directory, so that
/// anything it leaves behind shows.
struct Room {
    tmp: tempfile::TempDir,
    home: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl Room {
    fn new() -> Room {
        let dir = || tempfile::tempdir().expect("temp dir");
        Room {
            tmp: dir(),
            home: dir(),
            cwd: dir(),
        }
    }

    fn demo(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tf"));
        command
            .arg("demo")
            .args(args)
            .current_dir(self.cwd.path())
            .env("TMPDIR", self.tmp.path())
            .env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("TESTFLINGER_SERVER");
        command
    }

    fn assert_empty(&self) {
        for dir in [&self.tmp, &self.home, &self.cwd] {
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .collect();
            assert!(left.is_empty(), "left behind: {left:?}");
        }
    }
}

#[test]
fn the_demo_runs_a_lab_leaves_no_files_and_shows_only_the_phases_that_ran() {
    let room = Room::new();
    let kept = tempfile::tempdir().unwrap();
    let artifacts = kept.path().join("demo.tgz");
    let output = room
        .demo(&["--artifacts", artifacts.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Hello from the test phase"), "{stdout}");
    assert!(stdout.contains("\ncomplete\npassed\n"), "{stdout}");
    assert!(stdout.contains("artifacts/uname.txt"), "{stdout}");
    assert!(artifacts.exists(), "the artifacts asked for are kept");
    // The demo's phases are setup, test and cleanup: lines for those that ran, none for
    // the others (`waiting` and `running` are never shown without a terminal).
    for state in ["setup", "test"] {
        assert!(
            stdout.contains(&format!("State '{state}' lasted")),
            "{state}: {stdout}"
        );
    }
    for state in [
        "waiting",
        "running",
        "provision",
        "firmware_update",
        "allocate",
        "reserve",
    ] {
        assert!(
            !stdout.contains(&format!("State '{state}'")),
            "{state}: {stdout}"
        );
    }
    room.assert_empty();
}

#[test]
fn the_demo_with_keep_runs_until_ctrl_c_and_says_what_to_try() {
    let room = Room::new();
    let mut demo = room
        .demo(&["--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let server = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the demo ended early:\n{seen}"))
            .unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(url) = line.trim().strip_prefix("export TESTFLINGER_SERVER=") {
            break url.to_string();
        }
    };
    assert!(
        seen.contains(&format!("{server}/")),
        "the web pages: {seen}"
    );
    assert!(seen.contains("Ctrl-C"), "{seen}");

    // The lab is still there: the commands it suggests work on it.
    let agents = Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(["list-agents", "-1"])
        .env("TESTFLINGER_SERVER", &server)
        .env("XDG_CONFIG_HOME", room.home.path().join("client"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&agents.stdout), "demo-agent\n");
    std::fs::remove_dir_all(room.home.path().join("client")).unwrap();

    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(demo.id() as i32, libc::SIGINT);
    }
    assert!(eventually(|| demo.try_wait().unwrap().is_some()));
    assert!(demo.wait().unwrap().success());
    room.assert_empty();
}
