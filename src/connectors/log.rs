//! The connector's log lines on stderr, in the reference's format:
//! `2026-11-24 20:02:01,968 fake001 INFO: DEVICE CONNECTOR: BEGIN provision`.

use std::io::Write;

#[derive(Clone)]
pub struct Log {
    agent_name: String,
}

impl Log {
    /// Lines that name the agent (the device config's `agent_name`).
    pub fn new(agent_name: String) -> Log {
        Log { agent_name }
    }

    pub fn info(&self, message: &str) {
        self.line("INFO", message);
    }

    pub fn warning(&self, message: &str) {
        self.line("WARNING", message);
    }

    pub fn error(&self, message: &str) {
        self.line("ERROR", message);
    }

    fn line(&self, level: &str, message: &str) {
        let now = crate::job::time::now();
        let seconds = crate::job::time::render(now);
        let stamp = format!(
            "{} {},{:03}",
            &seconds[..10],
            &seconds[11..19],
            now.rem_euclid(1_000_000) / 1000
        );
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(
            stderr,
            "{stamp} {} {level}: DEVICE CONNECTOR: {message}",
            self.agent_name
        );
        let _ = stderr.flush();
    }
}
