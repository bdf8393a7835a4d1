//! Waiting for what a server or an agent does by itself. The deadlines only guard
//! against a test that would hang forever; they never measure anything.

use std::time::{Duration, Instant};

/// How long a test waits for something that should take well under a second.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `done` until it holds; whether it did within 30 seconds.
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Polls until `check` gives something; panics naming `what` when it never does.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
