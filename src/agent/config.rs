//! `testflinger-agent.conf`: the reference agent's YAML config, with exactly its keys,
//! types and defaults, plus `attachments_max_bytes` of tf's own. Unknown keys are
//! refused, as the reference's schema refuses them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;
use serde_yaml::Value as Yaml;

use crate::job::Phase;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The agent's config file (the reference's testflinger-agent.conf format)
    #[arg(short = 'c', long = "config", default_value = "testflinger-agent.conf")]
    pub config: PathBuf,
    /// Serve Prometheus metrics on this port (all interfaces)
    #[arg(short = 'p', long = "metrics_port", alias = "metrics-port")]
    pub metrics_port: Option<u16>,
    /// JSON file holding {"refresh_token": "..."} for an agent-role client
    #[arg(
        long = "token-file",
        default_value = "/var/lib/testflinger-agent/refresh_token"
    )]
    pub token_file: PathBuf,
    /// Check the config file and exit: 0 when it loads, 1 with the error otherwise
    #[arg(long)]
    pub check: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    /// Python's `int`, which YAML booleans satisfy too.
    Int,
    Bool,
    List,
    Dict,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Bool => "true or false",
            Kind::List => "a list",
            Kind::Dict => "a mapping",
        }
    }

    fn accepts(self, value: &Yaml) -> bool {
        match self {
            Kind::Str => value.is_string(),
            Kind::Int => value.is_i64() || value.is_u64() || value.is_bool(),
            Kind::Bool => value.is_bool(),
            Kind::List => value.is_sequence(),
            Kind::Dict => value.is_mapping(),
        }
    }
}

/// Every key the reference schema knows, its type, and whether it must be there.
const KEYS: &[(&str, Kind, bool)] = &[
    ("agent_id", Kind::Str, true),
    ("identifier", Kind::Str, false),
    ("location", Kind::Str, false),
    ("polling_interval", Kind::Int, false),
    ("server_address", Kind::Str, true),
    ("execution_basedir", Kind::Str, false),
    ("logging_basedir", Kind::Str, false),
    ("results_basedir", Kind::Str, false),
    ("logging_level", Kind::Str, false),
    ("logging_quiet", Kind::Bool, false),
    ("job_queues", Kind::List, true),
    ("setup_command", Kind::Str, false),
    ("provision_command", Kind::Str, false),
    ("firmware_update_command", Kind::Str, false),
    ("test_command", Kind::Str, false),
    ("allocate_command", Kind::Str, false),
    ("reserve_command", Kind::Str, false),
    ("cleanup_command", Kind::Str, false),
    ("provision_type", Kind::Str, false),
    ("global_timeout", Kind::Int, false),
    ("output_timeout", Kind::Int, false),
    ("advertised_queues", Kind::Dict, false),
    ("advertised_images", Kind::Dict, false),
    // Unused since the reference stopped truncating output, but still accepted.
    ("output_bytes", Kind::Int, false),
    // tf's own: the most a job's attachments may unpack to.
    ("attachments_max_bytes", Kind::Int, false),
];

/// The reference's cap on a phase when neither the job nor the config sets one.
pub const DEFAULT_GLOBAL_TIMEOUT: i64 = 14400;
pub const DEFAULT_OUTPUT_TIMEOUT: i64 = 900;
/// The most a job's attachments may unpack to unless `attachments_max_bytes` says.
const DEFAULT_ATTACHMENTS_MAX_BYTES: u64 = 10 << 30;

#[derive(Debug, Clone)]
pub struct Config {
    pub agent_id: String,
    pub identifier: Option<String>,
    pub location: String,
    pub polling_interval: u64,
    pub server_address: String,
    pub execution_basedir: PathBuf,
    pub logging_basedir: PathBuf,
    pub results_basedir: PathBuf,
    pub logging_level: String,
    pub logging_quiet: bool,
    pub job_queues: Vec<String>,
    pub provision_type: String,
    pub global_timeout: Option<i64>,
    pub output_timeout: Option<i64>,
    pub advertised_queues: Option<Value>,
    pub advertised_images: Option<Value>,
    pub attachments_max_bytes: u64,
    pub metrics_port: Option<u16>,
    pub token_file: PathBuf,
    /// Every string-valued entry (plus `token_file`), exported to phase commands as
    /// environment variables named after the key: deployed scripts read `$agent_id`.
    pub environment: Vec<(String, String)>,
    commands: Vec<(String, String)>,
}

impl Config {
    pub fn load(args: &AgentArgs) -> anyhow::Result<Config> {
        let path = &args.config;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent config {}", path.display()))?;
        Config::parse(&text, path, args)
    }

    fn parse(text: &str, path: &Path, args: &AgentArgs) -> anyhow::Result<Config> {
        let file = path.display();
        let yaml: Yaml =
            serde_yaml::from_str(text).with_context(|| format!("{file}: not valid YAML"))?;
        let Yaml::Mapping(entries) = yaml else {
            bail!("{file}: the config must be a mapping of keys to values");
        };
        for (key, value) in &entries {
            let Some(name) = key.as_str() else {
                bail!("{file}: keys must be strings, found {key:?}");
            };
            let Some((_, kind, _)) = KEYS.iter().find(|(known, _, _)| *known == name) else {
                bail!(
                    "{file}: unknown key `{name}` (extra keys are not allowed; the keys are {})",
                    KEYS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                );
            };
            if !kind.accepts(value) {
                bail!("{file}: `{name}` must be {}", kind.name());
            }
        }
        for (name, _, required) in KEYS {
            if *required && !entries.contains_key(name) {
                bail!("{file}: required key `{name}` is missing");
            }
        }

        let text_of = |key: &str| entries.get(key).and_then(Yaml::as_str).map(str::to_string);
        let int_of = |key: &str| {
            entries.get(key).and_then(|v| match v {
                Yaml::Bool(b) => Some(i64::from(*b)),
                other => other.as_i64(),
            })
        };
        let dir_of =
            |key: &str, default: &str| PathBuf::from(text_of(key).unwrap_or(default.into()));
        let json_of = |key: &str| {
            entries
                .get(key)
                .map(|v| serde_json::to_value(v).with_context(|| format!("{file}: `{key}`")))
                .transpose()
        };
        let job_queues = entries
            .get("job_queues")
            .and_then(Yaml::as_sequence)
            .map(|queues| queues.iter().filter_map(scalar_text).collect())
            .unwrap_or_default();

        let attachments_max_bytes = match int_of("attachments_max_bytes") {
            None => DEFAULT_ATTACHMENTS_MAX_BYTES,
            Some(bytes) => u64::try_from(bytes).map_err(|_| {
                anyhow::anyhow!("{file}: `attachments_max_bytes` must not be negative")
            })?,
        };

        let token_file = args.token_file.display().to_string();
        let mut environment: Vec<(String, String)> = entries
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
            .collect();
        environment.push(("token_file".into(), token_file));

        let commands = Phase::NAMES
            .iter()
            .filter_map(|phase| {
                let command = text_of(&format!("{phase}_command"))?;
                Some((phase.to_string(), command))
            })
            .collect();

        Ok(Config {
            agent_id: text_of("agent_id").unwrap_or_default(),
            identifier: text_of("identifier").filter(|s| !s.is_empty()),
            location: text_of("location").unwrap_or_default(),
            polling_interval: int_of("polling_interval").unwrap_or(10).max(0) as u64,
            server_address: text_of("server_address").unwrap_or_default(),
            execution_basedir: dir_of("execution_basedir", "/tmp/testflinger/run"),
            logging_basedir: dir_of("logging_basedir", "/tmp/testflinger/logs"),
            results_basedir: dir_of("results_basedir", "/tmp/testflinger/results"),
            logging_level: text_of("logging_level").unwrap_or("INFO".into()),
            logging_quiet: entries
                .get("logging_quiet")
                .and_then(Yaml::as_bool)
                .unwrap_or(false),
            job_queues,
            provision_type: text_of("provision_type").unwrap_or_default(),
            global_timeout: int_of("global_timeout"),
            output_timeout: int_of("output_timeout"),
            advertised_queues: json_of("advertised_queues")?,
            advertised_images: json_of("advertised_images")?,
            attachments_max_bytes,
            metrics_port: args.metrics_port,
            token_file: args.token_file.clone(),
            environment,
            commands,
        })
    }

    /// The shell command configured for `phase`, if any (empty means none).
    pub fn command(&self, phase: &str) -> Option<&str> {
        self.commands
            .iter()
            .find(|(name, _)| name == phase)
            .map(|(_, command)| command.as_str())
            .filter(|command| !command.trim().is_empty())
    }

    /// A phase's time limit: the job's own value, capped by the agent's.
    pub fn effective_timeout(job_value: Option<i64>, cap: Option<i64>, default: i64) -> i64 {
        let job_value = job_value.filter(|v| *v != 0).unwrap_or(default);
        let cap = cap.filter(|v| *v != 0).unwrap_or(default);
        job_value.min(cap)
    }
}

/// A queue name as the reference would format it (`str()` of a YAML scalar).
fn scalar_text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AgentArgs {
        AgentArgs {
            config: "agent.conf".into(),
            metrics_port: None,
            token_file: "/var/lib/testflinger-agent/refresh_token".into(),
            check: false,
        }
    }

    fn parse(text: &str) -> anyhow::Result<Config> {
        Config::parse(text, Path::new("agent.conf"), &args())
    }

    const MINIMAL: &str = "agent_id: a1\nserver_address: tf:5000\njob_queues: [q]\n";

    #[test]
    fn defaults_are_the_reference_ones() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.polling_interval, 10);
        assert_eq!(
            config.execution_basedir,
            PathBuf::from("/tmp/testflinger/run")
        );
        assert_eq!(config.job_queues, ["q"]);
        assert_eq!(config.command("setup"), None);
        assert!(config
            .environment
            .contains(&("agent_id".to_string(), "a1".to_string())));
        assert!(config.environment.iter().any(|(k, _)| k == "token_file"));
    }

    #[test]
    fn unknown_keys_wrong_types_and_missing_keys_are_named() {
        let unknown = parse(&format!("{MINIMAL}colour: red\n")).unwrap_err();
        assert!(
            unknown.to_string().contains("unknown key `colour`"),
            "{unknown}"
        );
        let wrong = parse("agent_id: 123\nserver_address: s\njob_queues: []\n").unwrap_err();
        assert!(
            wrong.to_string().contains("`agent_id` must be a string"),
            "{wrong}"
        );
        let float = parse(&format!("{MINIMAL}polling_interval: 2.5\n")).unwrap_err();
        assert!(float.to_string().contains("must be an integer"), "{float}");
        let missing = parse("agent_id: a\nserver_address: s\n").unwrap_err();
        assert!(
            missing.to_string().contains("`job_queues` is missing"),
            "{missing}"
        );
    }

    #[test]
    fn the_attachments_limit_is_ten_gib_unless_set() {
        assert_eq!(parse(MINIMAL).unwrap().attachments_max_bytes, 10 << 30);
        let set = parse(&format!("{MINIMAL}attachments_max_bytes: 1000\n")).unwrap();
        assert_eq!(set.attachments_max_bytes, 1000);
        let negative = parse(&format!("{MINIMAL}attachments_max_bytes: -1\n")).unwrap_err();
        assert!(
            negative.to_string().contains("must not be negative"),
            "{negative}"
        );
    }

    #[test]
    fn timeouts_are_capped_by_the_agent() {
        assert_eq!(Config::effective_timeout(None, None, 900), 900);
        assert_eq!(Config::effective_timeout(Some(5000), None, 900), 900);
        assert_eq!(Config::effective_timeout(Some(5000), Some(6000), 900), 5000);
        assert_eq!(Config::effective_timeout(Some(30), Some(6000), 900), 30);
    }
}
