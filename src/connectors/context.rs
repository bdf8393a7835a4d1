//! What every stage works with: the [`Context`] it is given (device config, job, log,
//! command runner) and the [`Failure`] it may end in, which decides the exit code.

use serde_json::{Map, Value};

use super::log::Log;
use super::runner::Runner;

/// How a stage failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The stage could not do its job (exit 1).
    Provisioning(String),
    /// The device could not be brought back: it is unusable (exit 46).
    Recovery(String),
}

impl Failure {
    /// The reference's exception name, for `device-connector-error.json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Provisioning(_) => "ProvisioningError",
            Failure::Recovery(_) => "RecoveryError",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Provisioning(m) | Failure::Recovery(m) => m,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Provisioning(_) => 1,
            Failure::Recovery(_) => 46,
        }
    }
}

/// A stage's exit status, or how it failed.
pub type StageResult = Result<i32, Failure>;

/// What every stage gets: the device config, the job, a logger and the command runner.
pub struct Context {
    pub config: Map<String, Value>,
    pub job: Value,
    pub log: Log,
    pub runner: Runner,
    /// `TF_CONNECTOR_NO_WAIT` is set: retry and polling loops do not pause (tests).
    no_wait: bool,
}

impl Context {
    pub fn new(config: Map<String, Value>, job: Value, log: Log) -> Context {
        Context {
            runner: Runner::new(log.clone(), &config),
            config,
            job,
            log,
            no_wait: std::env::var_os("TF_CONNECTOR_NO_WAIT").is_some(),
        }
    }

    /// Waits `duration` between retries or checks. Loops count their attempts rather than
    /// watch the clock, so with `TF_CONNECTOR_NO_WAIT` set they run through at once.
    pub fn pause(&self, duration: std::time::Duration) {
        if !self.no_wait {
            std::thread::sleep(duration);
        }
    }

    /// A config string, `None` when missing or empty.
    pub fn config_text(&self, key: &str) -> Option<String> {
        match self.config.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A required config string, as a clear failure when missing.
    pub fn required(&self, key: &str) -> Result<String, Failure> {
        self.config_text(key)
            .ok_or_else(|| Failure::Provisioning(format!("the device config has no `{key}`")))
    }

    /// A config list of commands (`reboot_script`, …); a single string counts as one.
    pub fn config_commands(&self, key: &str) -> Vec<String> {
        match self.config.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(single)) if !single.is_empty() => vec![single.clone()],
            _ => Vec::new(),
        }
    }

    /// `test_data.test_username`, or `ubuntu`. It goes into `user@host` ssh targets, so
    /// only a plain login name is accepted: `-oProxyCommand=…` must not pass as a user.
    pub fn test_username(&self) -> Result<String, Failure> {
        let user = self
            .job
            .pointer("/test_data/test_username")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .unwrap_or("ubuntu");
        if is_login_name(user) {
            Ok(user.to_string())
        } else {
            Err(Failure::Provisioning(format!(
                "test_username {user:?} is not a valid login name"
            )))
        }
    }
}

/// A POSIX-style login name: a lower-case letter or `_`, then letters, digits, `_.-`.
fn is_login_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && name.len() <= 32
}

#[cfg(test)]
mod tests {
    use super::is_login_name;

    #[test]
    fn only_plain_login_names_become_ssh_users() {
        for good in ["ubuntu", "_ci", "test-user.2"] {
            assert!(is_login_name(good), "{good}");
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "Root",
            "a b",
            "ü",
            "x@y",
            &"a".repeat(33),
        ] {
            assert!(!is_login_name(bad), "{bad}");
        }
    }
}
