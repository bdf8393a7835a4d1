//! `tf serve` settings. Each comes from, in order of precedence: the command line, a
//! `TF_*` environment variable, the YAML file given with `--config`, the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::store::postgres::Database;
use crate::store::{DatabaseChoice, SyncMode};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "TF_BIND", value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    /// Directory for the database and stored archives (created if missing) [default: ./tf-data]
    #[arg(long, env = "TF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// YAML file with any of the settings below (keys in snake_case: bind, data_dir, …)
    #[arg(long, env = "TF_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// How long jobs, logs, archives and silent agents are kept, e.g. "7d", "36h" [default: 7d]
    #[arg(long, env = "TF_RETENTION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// Largest JSON request body, in bytes [default: 16777216]
    #[arg(long, env = "TF_MAX_BODY_SIZE", value_name = "BYTES")]
    max_body_size: Option<usize>,
    /// Largest attachment or artifact upload, in bytes [default: 4294967296]
    #[arg(long, env = "TF_MAX_UPLOAD_SIZE", value_name = "BYTES")]
    max_upload_size: Option<u64>,
    /// normal: survive a crash of the server; full: also survive a power cut [default: normal]
    /// (SQLite only)
    #[arg(long, env = "TF_SYNC", value_enum)]
    sync: Option<SyncMode>,
    /// Keep the records in this PostgreSQL database instead of SQLite in the data dir:
    /// postgres://USER@HOST[:PORT]/DB (password from PGPASSWORD; see docs/operations.md)
    #[arg(long, env = "TF_DATABASE", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// The only scheme://host:port job status events may be relayed to (also WEBHOOK_URL)
    #[arg(long, env = "TF_WEBHOOK_URL", value_name = "URL")]
    webhook_url: Option<String>,
    /// Bearer token sent to the webhook (also WEBHOOK_AUTH)
    #[arg(
        long,
        env = "TF_WEBHOOK_AUTH",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    webhook_auth: Option<String>,
    /// File with the key that signs access tokens (the reference's JWT_SIGNING_KEY is also
    /// honoured) [default: DATA_DIR/jwt-signing.key, created on first start]
    #[arg(long, env = "TF_JWT_KEY_FILE", value_name = "FILE")]
    jwt_key_file: Option<PathBuf>,
    /// Seconds of clock skew allowed on access tokens (also JWT_LEEWAY) [default: 5]
    #[arg(long, env = "TF_JWT_LEEWAY", value_name = "SECONDS")]
    jwt_leeway: Option<i64>,
    /// How long an access token is valid [default: 10m]
    #[arg(long, env = "TF_ACCESS_TOKEN_LIFETIME", value_name = "DURATION", value_parser = parse_token_lifetime)]
    access_token_lifetime: Option<Duration>,
    /// How long a refresh token is valid; `tf agent` renews its own once it is half way
    /// through [default: 6d]
    #[arg(long, env = "TF_REFRESH_TOKEN_LIFETIME", value_name = "DURATION", value_parser = parse_token_lifetime)]
    refresh_token_lifetime: Option<Duration>,
    /// File with the 32-byte master key that encrypts stored secrets (raw or base64)
    /// [default: DATA_DIR/secrets.key, created on first start]
    #[arg(long, env = "TF_SECRETS_KEY_FILE", value_name = "FILE")]
    secrets_key_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key)
    #[arg(long, env = "TF_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "TF_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most connections open at once; over it, the longest-idle one is closed to make room
    /// [default: three quarters of the open-file limit, at most 10000]
    #[arg(long, env = "TF_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<u32>,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opened or got its previous answer (so also how long it may sit idle) [default: 30s]
    #[arg(long, env = "TF_HEADER_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    header_timeout: Option<Duration>,
    /// When tf.db is missing, empty or damaged: move it, the archives and the keys into
    /// DATA_DIR/set-aside-<time> and start with an empty database (a healthy database is
    /// never touched)
    #[arg(long)]
    start_afresh: bool,
    /// Let callers without a token use the agent endpoints, as agents from before 2026
    /// do (anyone who can reach the server may then run jobs: trusted networks only)
    #[arg(long, env = "TF_TOKENLESS_AGENTS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    tokenless_agents: Option<bool>,
}

/// The settings file: the same keys as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    bind: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "human_duration")]
    retention: Option<Duration>,
    max_body_size: Option<usize>,
    max_upload_size: Option<u64>,
    sync: Option<SyncMode>,
    database: Option<String>,
    webhook_url: Option<String>,
    webhook_auth: Option<String>,
    jwt_key_file: Option<PathBuf>,
    jwt_leeway: Option<i64>,
    #[serde(default, deserialize_with = "human_duration")]
    access_token_lifetime: Option<Duration>,
    #[serde(default, deserialize_with = "human_duration")]
    refresh_token_lifetime: Option<Duration>,
    secrets_key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tokenless_agents: Option<bool>,
    max_connections: Option<u32>,
    #[serde(default, deserialize_with = "human_duration")]
    header_timeout: Option<Duration>,
}

fn human_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    text.map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
        .transpose()
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    pub retention: Duration,
    pub max_body_size: usize,
    pub max_upload_size: u64,
    /// SQLite in the data dir (synced as asked), or a PostgreSQL database.
    pub database: DatabaseChoice,
    pub webhook_url: Option<String>,
    pub webhook_auth: Option<String>,
    /// Where the JWT signing key lives, unless `jwt_key` gives it directly.
    pub jwt_key_file: PathBuf,
    /// The reference's `JWT_SIGNING_KEY`, when set.
    pub jwt_key: Option<String>,
    pub jwt_leeway: i64,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
    pub secrets_key_file: PathBuf,
    /// Certificate chain and key files: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Anonymous callers may also act as agents (for agents without tokens).
    pub tokenless_agents: bool,
    /// `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    pub header_timeout: Duration,
    /// Set a lost database and its data aside instead of refusing to start.
    pub start_afresh: bool,
}

impl Config {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
        let file = config_file(args.config.as_deref())?;
        let reference_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let data_dir = data_dir(args.data_dir, &file);
        let refresh_token_lifetime = refresh_token_lifetime(args.refresh_token_lifetime, &file)?;
        let reference_leeway = match reference_env("JWT_LEEWAY") {
            Some(text) => Some(
                text.parse()
                    .context("JWT_LEEWAY must be a number of seconds")?,
            ),
            None => None,
        };
        let database = database_choice(args.database, args.sync, &file)?;
        let config = Config {
            database,
            bind: args
                .bind
                .or(file.bind)
                .unwrap_or(([127, 0, 0, 1], 5000).into()),
            jwt_key_file: args
                .jwt_key_file
                .or(file.jwt_key_file)
                .unwrap_or_else(|| data_dir.join("jwt-signing.key")),
            jwt_key: reference_env("JWT_SIGNING_KEY"),
            jwt_leeway: args
                .jwt_leeway
                .or(file.jwt_leeway)
                .or(reference_leeway)
                .unwrap_or(5),
            access_token_lifetime: token_lifetime(
                "access_token_lifetime",
                args.access_token_lifetime.or(file.access_token_lifetime),
                ACCESS_TOKEN_LIFETIME,
            )?,
            refresh_token_lifetime,
            secrets_key_file: args
                .secrets_key_file
                .or(file.secrets_key_file)
                .unwrap_or_else(|| data_dir.join("secrets.key")),
            tls: match (
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => anyhow::bail!("tls_cert and tls_key go together"),
            },
            tokenless_agents: args
                .tokenless_agents
                .or(file.tokenless_agents)
                .unwrap_or(false),
            max_connections: match args.max_connections.or(file.max_connections) {
                Some(0) => anyhow::bail!("max_connections must be at least 1"),
                cap => cap.map(|n| n as usize),
            },
            header_timeout: match args.header_timeout.or(file.header_timeout) {
                Some(timeout) if timeout < Duration::from_millis(100) => {
                    anyhow::bail!("header_timeout must be at least 100ms")
                }
                timeout => timeout.unwrap_or(Duration::from_secs(30)),
            },
            start_afresh: args.start_afresh,
            data_dir,
            retention: args
                .retention
                .or(file.retention)
                .unwrap_or(Duration::from_secs(7 * 86_400)),
            max_body_size: args
                .max_body_size
                .or(file.max_body_size)
                .unwrap_or(16 << 20),
            max_upload_size: args
                .max_upload_size
                .or(file.max_upload_size)
                .unwrap_or(4 << 30),
            webhook_url: args
                .webhook_url
                .or(file.webhook_url)
                .or_else(|| reference_env("WEBHOOK_URL")),
            webhook_auth: args
                .webhook_auth
                .or(file.webhook_auth)
                .or_else(|| reference_env("WEBHOOK_AUTH")),
        };
        config.check_refresh_tokens_renewable()?;
        Ok(config)
    }

    /// `tf agent` asks for a new access token only once its own is refused, and renews
    /// its refresh token only in the second half of that token's life: the second half
    /// must hold at least one such refusal, or the agent runs out.
    fn check_refresh_tokens_renewable(&self) -> anyhow::Result<()> {
        let leeway = Duration::from_secs(self.jwt_leeway.max(0) as u64);
        if self.refresh_token_lifetime > 2 * (self.access_token_lifetime + leeway) {
            return Ok(());
        }
        anyhow::bail!(
            "refresh_token_lifetime ({}) must be more than twice access_token_lifetime ({}) \
             plus jwt_leeway ({}s), or agents cannot renew their refresh tokens",
            humantime::format_duration(self.refresh_token_lifetime),
            humantime::format_duration(self.access_token_lifetime),
            leeway.as_secs()
        )
    }
}

/// What `tf clients` shares with `tf serve`: the data dir, the database and the lifetime
/// of the refresh tokens it writes, each from the command line or environment, else the
/// `--config` file, else the default.
pub struct HostSettings {
    pub data_dir: PathBuf,
    pub database: DatabaseChoice,
    pub refresh_token_lifetime: Duration,
}

pub fn host_settings(
    config: Option<&Path>,
    data_dir_flag: Option<PathBuf>,
    database_flag: Option<String>,
    refresh_token_lifetime_flag: Option<Duration>,
) -> anyhow::Result<HostSettings> {
    let file = config_file(config)?;
    Ok(HostSettings {
        data_dir: data_dir(data_dir_flag, &file),
        database: database_choice(database_flag, None, &file)?,
        refresh_token_lifetime: refresh_token_lifetime(refresh_token_lifetime_flag, &file)?,
    })
}

/// PostgreSQL when a URL is given (flag or environment, else the file), else SQLite.
fn database_choice(
    url_flag: Option<String>,
    sync_flag: Option<SyncMode>,
    file: &ConfigFile,
) -> anyhow::Result<DatabaseChoice> {
    let url = url_flag.or_else(|| file.database.clone());
    let sync = sync_flag.or(file.sync);
    match url {
        Some(url) => {
            if sync.is_some() {
                anyhow::bail!("sync applies to SQLite only: PostgreSQL commits as it is configured (synchronous_commit)");
            }
            Ok(DatabaseChoice::Postgres(Box::new(Database::parse(&url)?)))
        }
        None => Ok(DatabaseChoice::Sqlite(sync.unwrap_or(SyncMode::Normal))),
    }
}

/// The data dir when neither the command line, the environment nor a config file names one.
pub const DEFAULT_DATA_DIR: &str = "tf-data";

fn config_file(path: Option<&Path>) -> anyhow::Result<ConfigFile> {
    match path {
        Some(path) => read_config_file(path),
        None => Ok(ConfigFile::default()),
    }
}

fn data_dir(flag: Option<PathBuf>, file: &ConfigFile) -> PathBuf {
    flag.or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
}

fn refresh_token_lifetime(flag: Option<Duration>, file: &ConfigFile) -> anyhow::Result<Duration> {
    token_lifetime(
        "refresh_token_lifetime",
        flag.or(file.refresh_token_lifetime),
        REFRESH_TOKEN_LIFETIME,
    )
}

/// The reference's token lifetimes, the defaults of the settings.
const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(600);
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(6 * 86_400);

/// The longest token lifetime, 10 years as humantime counts them: far past any use, and
/// well within what expiry times in microseconds hold.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(315_576_000);

/// A token lifetime: whole seconds (tokens carry their expiry in seconds), at least one.
fn check_token_lifetime(lifetime: Duration) -> Result<Duration, String> {
    if lifetime.as_secs() == 0 || lifetime.subsec_nanos() != 0 {
        return Err("a token lifetime must be a whole number of seconds, at least 1s".into());
    }
    if lifetime > MAX_TOKEN_LIFETIME {
        return Err("a token lifetime must be at most 10 years".into());
    }
    Ok(lifetime)
}

/// A token lifetime on the command line, e.g. "6d" or "90s".
pub fn parse_token_lifetime(text: &str) -> Result<Duration, String> {
    check_token_lifetime(humantime::parse_duration(text).map_err(|e| e.to_string())?)
}

/// A token lifetime setting (from the command line or the file), or its default.
fn token_lifetime(
    name: &str,
    set: Option<Duration>,
    default: Duration,
) -> anyhow::Result<Duration> {
    set.map(check_token_lifetime)
        .transpose()
        .map_err(|message| anyhow::anyhow!("{name}: {message}"))
        .map(|lifetime| lifetime.unwrap_or(default))
}

fn read_config_file(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_yaml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}
