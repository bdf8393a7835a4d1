//! The agent's own log: `<logging_basedir>/testflinger-agent.log`, and stderr unless
//! `logging_quiet`, at the config's `logging_level` (`RUST_LOG` overrides it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tracing_subscriber::fmt::MakeWriter;

use super::config::Config;

pub fn init(config: &Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.logging_basedir)
        .with_context(|| format!("cannot create {}", config.logging_basedir.display()))?;
    let path = config.logging_basedir.join("testflinger-agent.log");
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open the agent log {}", path.display()))?;
    let level = match config.logging_level.to_ascii_uppercase().as_str() {
        "DEBUG" | "NOTSET" => "debug",
        "WARNING" | "WARN" => "warn",
        "ERROR" | "CRITICAL" | "FATAL" => "error",
        // Like Python's logging, an unknown name means INFO.
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let writer = Tee {
        file: Arc::new(Mutex::new(file)),
        to_stderr: !config.logging_quiet,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Writes every log line to the file and, unless quiet, to stderr.
#[derive(Clone)]
struct Tee {
    file: Arc<Mutex<File>>,
    to_stderr: bool,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.to_stderr {
            let _ = std::io::stderr().write_all(buf);
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = Tee;

    fn make_writer(&'a self) -> Tee {
        self.clone()
    }
}
