//! `tf clients …`: managing API clients on the lab host itself, straight on the data dir
//! (the server may be running). The HTTP `client-permissions` API does the same remotely
//! but cannot create the first admin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use super::auth::Role;
use super::logins::BCRYPT_COST;
use crate::job::names::NameKind;
use crate::store::{Client, RefreshTokens, Store};

#[derive(Debug, clap::Args)]
pub struct ClientsArgs {
    /// The server's data directory [default: ./tf-data]
    #[arg(long, env = "TF_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The server's PostgreSQL database, when it has one (`tf serve --database`)
    #[arg(
        long,
        env = "TF_DATABASE",
        value_name = "URL",
        global = true,
        hide_env_values = true
    )]
    database: Option<String>,
    /// The server's settings file (`tf serve --config`): its data_dir, database and
    /// refresh_token_lifetime apply here too
    #[arg(long, env = "TF_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// How long the refresh tokens of token files are valid (`tf agent` renews its own
    /// once it is half way through) [default: the config's, else 6d]
    #[arg(
        long,
        env = "TF_REFRESH_TOKEN_LIFETIME",
        value_name = "DURATION",
        global = true,
        value_parser = super::config::parse_token_lifetime
    )]
    refresh_token_lifetime: Option<Duration>,
    #[command(subcommand)]
    command: ClientsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ClientsCommand {
    /// Create a client and print its generated secret (shown only this once), or write
    /// its token file (--token-file)
    Add {
        /// The new client's id (what it logs in with)
        #[arg(value_parser = parse_client_id)]
        client_id: String,
        /// admin, manager, contributor or agent
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Highest job priority on QUEUE (`*` for every queue); repeatable
        #[arg(long = "max-priority", value_name = "QUEUE=N", value_parser = parse_limit)]
        max_priority: Vec<(String, i64)>,
        /// A restricted queue the client may submit to; repeatable
        #[arg(long = "allowed-queue", value_name = "QUEUE")]
        allowed_queues: Vec<String>,
        /// Longest reservation on QUEUE (`*` for every queue), in seconds; repeatable
        #[arg(long = "max-reservation", value_name = "QUEUE=SECONDS", value_parser = parse_limit)]
        max_reservation: Vec<(String, i64)>,
        /// The owner's e-mail address
        #[arg(long)]
        email: Option<String>,
        /// Read the secret from this file instead of generating one
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        token: TokenFileArgs,
    },
    /// List the clients and their roles
    List,
    /// Show one client's permissions as JSON
    Show {
        /// The client's id
        client_id: String,
    },
    /// Delete a client
    Remove {
        /// The client's id
        client_id: String,
    },
    /// Write another token file for an agent, leaving its other tokens working (for an
    /// agent whose token expired or was lost)
    Token {
        /// The agent's client id
        client_id: String,
        /// Where to write the token file (mode 0600)
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
    },
    /// Give a client a new secret and print it (shown only this once); its refresh tokens
    /// stop working
    RotateSecret {
        /// The client's id
        client_id: String,
        /// Read the secret from this file instead of generating one
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        token: TokenFileArgs,
    },
}

/// An agent's token file, written on the lab host instead of handing out the secret.
#[derive(Debug, clap::Args)]
struct TokenFileArgs {
    /// Write a refresh token of the agent to FILE, as `tf agent --token-file FILE` reads
    /// it (mode 0600); a generated secret is then not shown
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

fn parse_client_id(text: &str) -> Result<String, String> {
    NameKind::Client
        .check(text)
        .map_err(|error| error.to_string())?;
    Ok(text.to_string())
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text)
        .ok_or_else(|| format!("'{text}' is not one of admin, manager, contributor, agent"))
}

fn parse_limit(text: &str) -> Result<(String, i64), String> {
    let (queue, number) = text.split_once('=').ok_or("expected QUEUE=NUMBER")?;
    let number = number
        .trim()
        .parse()
        .map_err(|_| format!("'{number}' is not a whole number"))?;
    Ok((queue.trim().to_string(), number))
}

fn limits(pairs: Vec<(String, i64)>) -> Option<Map<String, Value>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .into_iter()
            .map(|(q, n)| (q, Value::from(n)))
            .collect()
    })
}

/// A secret from a file, or a fresh random one (32 alphanumerics).
fn secret(file: Option<PathBuf>) -> anyhow::Result<(String, bool)> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let secret = text.trim().to_string();
        if secret.chars().count() < 15 {
            bail!(
                "the secret in {} is shorter than 15 characters",
                path.display()
            );
        }
        return Ok((secret, false));
    }
    let secret =
        super::keys::random_alphanumeric(32).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok((secret, true))
}

pub fn run(args: ClientsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let settings = super::config::host_settings(
        args.config.as_deref(),
        args.data_dir,
        args.database,
        args.refresh_token_lifetime,
    )?;
    runtime.block_on(async move {
        let store = Store::open_beside_server(&settings.data_dir, settings.database).await?;
        let tokens = TokenIssuer {
            store: &store,
            lifetime: settings.refresh_token_lifetime,
        };
        execute(&tokens, args.command).await
    })
}

/// Writes token files: refresh tokens of the store's agents, valid for `lifetime`.
struct TokenIssuer<'a> {
    store: &'a Store,
    lifetime: Duration,
}

impl TokenIssuer<'_> {
    /// Issues a refresh token of the agent `client_id` and writes the token file, when
    /// one was asked for.
    async fn write(&self, client_id: &str, token_file: Option<&Path>) -> anyhow::Result<()> {
        let Some(path) = token_file else {
            return Ok(());
        };
        let refresh_token =
            super::tokens::issue_refresh_token(self.store, client_id, self.lifetime, None)
                .await?
                .with_context(|| format!("no client {client_id}"))?;
        crate::api::write_refresh_token(path, &refresh_token)
    }
}

/// Only `tf agent` reads token files: other clients log in with their secret.
fn check_token_file_role(role: Role, token_file: Option<&Path>) -> anyhow::Result<()> {
    if token_file.is_some() && role != Role::Agent {
        bail!(
            "--token-file is for agents (role agent); a {} client logs in with its secret",
            role.as_str()
        );
    }
    Ok(())
}

/// An existing client and its role.
async fn existing_client(store: &Store, client_id: &str) -> anyhow::Result<(Client, Role)> {
    let (client, _) = store
        .client(client_id)
        .await?
        .with_context(|| format!("no client {client_id}"))?;
    let role = Role::parse(&client.role)
        .with_context(|| format!("client {client_id} has an unknown role {:?}", client.role))?;
    Ok((client, role))
}

async fn execute(tokens: &TokenIssuer<'_>, command: ClientsCommand) -> anyhow::Result<()> {
    let store = tokens.store;
    match command {
        ClientsCommand::Add {
            client_id,
            role,
            max_priority,
            allowed_queues,
            max_reservation,
            email,
            secret_file,
            token,
        } => {
            if store.client(&client_id).await?.is_some() {
                bail!("client {client_id} already exists (use rotate-secret for a new secret)");
            }
            check_token_file_role(role, token.token_file.as_deref())?;
            let (secret, generated) = secret(secret_file)?;
            let client = Client {
                client_id: client_id.clone(),
                role: role.as_str().into(),
                max_priority: limits(max_priority),
                allowed_queues: (!allowed_queues.is_empty()).then_some(allowed_queues),
                max_reservation_time: limits(max_reservation),
                email,
            };
            let hash = bcrypt::hash(&secret, BCRYPT_COST)?;
            store
                .save_client(client, Some(hash), RefreshTokens::Keep)
                .await?;
            if let Err(error) = tokens.write(&client_id, token.token_file.as_deref()).await {
                // All or nothing: the same command can simply be run again.
                store.remove_client(&client_id).await?;
                return Err(error);
            }
            report(
                &client_id,
                generated.then_some(secret.as_str()),
                token.token_file.as_deref(),
            );
        }
        ClientsCommand::List => {
            for client in store.clients().await? {
                println!("{}\t{}", client.client_id, client.role);
            }
        }
        ClientsCommand::Show { client_id } => {
            let (client, _) = store
                .client(&client_id)
                .await?
                .with_context(|| format!("no client {client_id}"))?;
            let shown: BTreeMap<_, _> = client.permissions().into_iter().collect();
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        ClientsCommand::Remove { client_id } => {
            if !store.remove_client(&client_id).await? {
                bail!("no client {client_id}");
            }
            println!("removed client {client_id}");
        }
        ClientsCommand::Token {
            client_id,
            token_file,
        } => {
            let (_, role) = existing_client(store, &client_id).await?;
            check_token_file_role(role, Some(&token_file))?;
            tokens.write(&client_id, Some(&token_file)).await?;
            report(&client_id, None, Some(&token_file));
        }
        ClientsCommand::RotateSecret {
            client_id,
            secret_file,
            token,
        } => {
            let (client, role) = existing_client(store, &client_id).await?;
            check_token_file_role(role, token.token_file.as_deref())?;
            let (secret, generated) = secret(secret_file)?;
            // Whoever held the old secret may hold its refresh tokens too.
            let hash = bcrypt::hash(&secret, BCRYPT_COST)?;
            store
                .save_client(client, Some(hash), RefreshTokens::Revoke)
                .await?;
            tokens
                .write(&client_id, token.token_file.as_deref())
                .await?;
            report(
                &client_id,
                generated.then_some(secret.as_str()),
                token.token_file.as_deref(),
            );
        }
    }
    Ok(())
}

/// What was made: the token file written, else a generated secret (shown only now).
fn report(client_id: &str, generated_secret: Option<&str>, token_file: Option<&Path>) {
    println!("client_id: {client_id}");
    if let Some(path) = token_file {
        println!(
            "token file: {} (start the agent with --token-file {0})",
            path.display()
        );
    } else if let Some(secret) = generated_secret {
        println!("secret: {secret}");
        eprintln!("(the secret is shown only now; keep it safe)");
    }
}
