//! The machine a muxpi device's storage mux is plugged into (the config's `control_host`,
//! as `control_user`), driven over ssh: commands retried or probed once, files copied
//! with scp. The image is written and the test user prepared there.

use std::path::Path;
use std::time::Duration;

use super::context::{Context, Failure};
use super::runner::{Output, RunError, SSH_OPTIONS};

const TRIES: u32 = 3;
const PAUSE: Duration = Duration::from_secs(5);

/// `text` as one word for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The mux's host, reached over ssh as `control_user@control_host`.
pub struct MuxHost<'a> {
    context: &'a Context,
    target: String,
}

impl<'a> MuxHost<'a> {
    pub fn new(context: &'a Context) -> Result<MuxHost<'a>, Failure> {
        let user = context
            .config_text("control_user")
            .unwrap_or("ubuntu".into());
        Ok(MuxHost {
            context,
            target: format!("{user}@{}", context.required("control_host")?),
        })
    }

    /// `user@host`, for ssh.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn ssh_argv<'b>(&'b self, command: &'b str) -> Vec<&'b str> {
        let mut argv = vec!["ssh"];
        argv.extend(SSH_OPTIONS);
        argv.push(&self.target);
        argv.push(command);
        argv
    }

    /// Runs `command` on the mux's host, retried when it fails.
    pub fn run(&self, command: &str, limit: Duration) -> Result<Output, Failure> {
        let mut last = String::new();
        for attempt in 1..=TRIES {
            match self
                .context
                .runner
                .run(&self.ssh_argv(command), Some(limit))
            {
                Ok(output) if output.success() => return Ok(output),
                Ok(output) => last = output.all(),
                Err(RunError::Missing(program)) => {
                    return Err(Failure::Provisioning(format!("{program} is not installed")))
                }
                Err(error) => last = error.to_string(),
            }
            if attempt < TRIES {
                self.context.log.warning(&format!(
                    "Control command failed, retrying in 5s ({attempt}/{TRIES}): {command}"
                ));
                self.context.pause(PAUSE);
            }
        }
        Err(Failure::Provisioning(format!(
            "control host command `{command}` failed: {}",
            last.trim()
        )))
    }

    /// Runs `command` once: whether it succeeded (for probes and expected failures).
    pub fn probe(&self, command: &str) -> Option<Output> {
        match self
            .context
            .runner
            .run(&self.ssh_argv(command), Some(Duration::from_secs(60)))
        {
            Ok(output) if output.success() => Some(output),
            _ => None,
        }
    }

    /// Copies the local file to `remote` on the mux's host.
    pub fn copy(&self, local: &Path, remote: &str) -> Result<(), Failure> {
        let local = local.to_string_lossy();
        let destination = format!("{}:{remote}", self.target);
        let mut argv = vec!["scp"];
        argv.extend(SSH_OPTIONS);
        argv.push(&local);
        argv.push(&destination);
        match self
            .context
            .runner
            .run(&argv, Some(Duration::from_secs(120)))
        {
            Ok(output) if output.success() => Ok(()),
            Ok(output) => Err(Failure::Provisioning(output.all())),
            Err(error) => Err(Failure::Provisioning(error.to_string())),
        }
    }
}
