//! `login` and `secret write|delete`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::options::Credentials;
use super::session::{Failure, Session};
use crate::api::v1;

pub async fn login(session: &Session) -> anyhow::Result<ExitCode> {
    session.login.forget();
    match session.login.obtain().await {
        Ok(Some(_)) => {
            let who = session.login.client_id().unwrap_or_default();
            println!("Successfully authenticated as '{who}'");
            Ok(ExitCode::SUCCESS)
        }
        Ok(None) => match session.login.unreachable() {
            Some(reason) => Err(Failure::Network(reason).into_error()),
            None => bail!("Please provide credentials and reattempt login"),
        },
        Err(message) => bail!("{message}"),
    }
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a secret on the server (for jobs' test_data.secrets)
    Write(SecretWrite),
    /// Delete a secret from the server
    Delete(SecretDelete),
}

impl SecretCommand {
    pub fn credentials(&self) -> &Credentials {
        match self {
            SecretCommand::Write(args) => &args.credentials,
            SecretCommand::Delete(args) => &args.credentials,
        }
    }
}

#[derive(Args, Debug)]
pub struct SecretWrite {
    /// Where the secret lives, e.g. lab/token
    #[arg(value_parser = parse_secret_path)]
    pub path: String,
    /// The secret itself
    pub value: String,
    /// Seconds until the secret is deleted (-1: never)
    #[arg(long, conflicts_with = "single_use", allow_negative_numbers = true)]
    pub expire_after: Option<i64>,
    /// Delete the secret after its first use
    #[arg(long)]
    pub single_use: bool,
    #[command(flatten)]
    pub credentials: Credentials,
}

#[derive(Args, Debug)]
pub struct SecretDelete {
    /// Where the secret lives, e.g. lab/token
    #[arg(value_parser = parse_secret_path)]
    pub path: String,
    #[command(flatten)]
    pub credentials: Credentials,
}

fn parse_secret_path(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("Invalid value '{text}', not a valid path. \nPaths must only contain alphanumeric characters, hyphens (-), underscores (_), and forward slashes (/). Additionally, paths must not start or end with a forward slash (/)."))
    }
}

/// Secrets belong to the logged-in client: who that is.
async fn owner(session: &Session, action: &str) -> anyhow::Result<String> {
    if let Err(message) = session.login.obtain().await {
        bail!("{message}");
    }
    match session.login.client_id() {
        Some(id) => Ok(id),
        None => bail!("Error {action} secret: Authentication is required"),
    }
}

fn failed(action: &str, failure: Failure) -> anyhow::Error {
    match failure {
        Failure::Status { status, message } => {
            anyhow::anyhow!("Error {action} secret: [{status}] {message}")
        }
        other => other.into_error(),
    }
}

pub async fn secret(session: &Session, command: SecretCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Write(args) => {
            let client_id = owner(session, "writing").await?;
            let body = if args.single_use {
                json!({"value": args.value, "ephemeral": true})
            } else {
                let expire_after = match args.expire_after.unwrap_or(31_536_000) {
                    -1 => Value::Null,
                    n if n > 0 => json!(n),
                    _ => bail!("Error writing secret: --expire-after must be a positive integer or -1 for no expiration"),
                };
                json!({"value": args.value, "expire_after": expire_after})
            };
            let reply = session
                .call(v1::put_secret(&client_id, &args.path, &body))
                .await
                .map_err(|f| failed("writing", f))?;
            println!("Secret '{}' written successfully", args.path);
            let expires_at = reply
                .json::<Value>()
                .ok()
                .and_then(|b| b.get("expires_at")?.as_str().map(str::to_string));
            if args.single_use {
                println!("This secret will be deleted after first use");
            } else if let Some(at) = expires_at {
                println!("This secret will expire at {}", expiry_text(&at));
            } else {
                println!("This secret will not expire automatically");
            }
        }
        SecretCommand::Delete(args) => {
            let client_id = owner(session, "deleting").await?;
            session
                .call(v1::delete_secret(&client_id, &args.path))
                .await
                .map_err(|f| failed("deleting", f))?;
            println!("Secret '{}' deleted successfully", args.path);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `strftime("%Y-%m-%d %H:%M:%S %Z")` of an ISO time: `+00:00` reads `UTC`.
fn expiry_text(iso: &str) -> String {
    let (Some(date), Some(time), Some(rest)) = (iso.get(..10), iso.get(11..19), iso.get(19..))
    else {
        return iso.to_string();
    };
    let when = format!("{date} {time}");
    let offset = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let zone = match offset {
        "" => String::new(),
        "Z" | "+00:00" => "UTC".into(),
        other => format!("UTC{other}"),
    };
    format!("{when} {zone}")
}
