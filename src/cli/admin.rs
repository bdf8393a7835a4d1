//! `admin`: agent states and client permissions, for managers and admins.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use super::login::token_claims;
use super::options::Credentials;
use super::session::{Failure, Session};
use crate::api::v1;
use crate::codec::pyjson;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Change agent states or client permissions
    #[command(subcommand)]
    Set(SetCommand),
    /// Show client permissions
    #[command(subcommand)]
    Get(GetCommand),
    /// Remove client permissions
    #[command(subcommand)]
    Delete(DeleteCommand),
}

#[derive(Subcommand, Debug)]
pub enum SetCommand {
    /// Put agents online, offline or in maintenance
    AgentStatus(AgentStatusArgs),
    /// Create or update a client's permissions
    ClientPermissions(SetPermissionsArgs),
}

#[derive(Subcommand, Debug)]
pub enum GetCommand {
    /// Show one client's permissions, or all
    ClientPermissions(ClientIdArgs),
}

#[derive(Subcommand, Debug)]
pub enum DeleteCommand {
    /// Delete a client and its permissions
    ClientPermissions(ClientIdArgs),
}

impl AdminCommand {
    pub fn credentials(&self) -> &Credentials {
        match self {
            AdminCommand::Set(SetCommand::AgentStatus(args)) => &args.credentials,
            AdminCommand::Set(SetCommand::ClientPermissions(args)) => &args.credentials,
            AdminCommand::Get(GetCommand::ClientPermissions(args))
            | AdminCommand::Delete(DeleteCommand::ClientPermissions(args)) => &args.credentials,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum AgentStatus {
    Online,
    Offline,
    Maintenance,
}

#[derive(Args, Debug)]
pub struct AgentStatusArgs {
    #[arg(long, value_enum)]
    pub status: AgentStatus,
    /// Agents to change (repeatable)
    #[arg(long, num_args = 1.., required = true, action = clap::ArgAction::Append)]
    pub agents: Vec<String>,
    /// Why (required for offline)
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub credentials: Credentials,
}

#[derive(Args, Debug)]
pub struct SetPermissionsArgs {
    #[arg(long)]
    pub testflinger_client_id: Option<String>,
    #[arg(long)]
    pub testflinger_client_secret: Option<String>,
    /// JSON, e.g. '{"queue": 10}'
    #[arg(long)]
    pub max_priority: Option<String>,
    /// JSON, e.g. '{"queue": 86400}'
    #[arg(long)]
    pub max_reservation: Option<String>,
    #[arg(long, value_parser = ["admin", "manager", "contributor", "agent"])]
    pub role: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// The whole permissions document as JSON (instead of the flags above)
    #[arg(long)]
    pub json: Option<String>,
    #[command(flatten)]
    pub credentials: Credentials,
}

#[derive(Args, Debug)]
pub struct ClientIdArgs {
    #[arg(long)]
    pub testflinger_client_id: Option<String>,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// The reference's role check, on the token's claims (not verified: the server checks).
async fn require_role(session: &Session, roles: &[&str]) -> anyhow::Result<String> {
    let token = match session.login.obtain().await {
        Ok(Some(token)) => token,
        Ok(None) => bail!(
            "Authentication with Testflinger server failed. Check your client id and secret key"
        ),
        Err(message) => bail!("{message}"),
    };
    let role = token_claims(&token)
        .and_then(|claims| {
            let permissions = claims.get("permissions")?.clone();
            Some(
                permissions
                    .get("role")
                    .and_then(Value::as_str)
                    .unwrap_or("contributor")
                    .to_lowercase(),
            )
        })
        .unwrap_or_default();
    if !roles.contains(&role.as_str()) {
        bail!(
            "Authorization Error: Command requires role: {}",
            roles.join(", ")
        );
    }
    Ok(session.login.client_id().unwrap_or_default())
}

pub async fn run(session: &Session, command: AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Set(SetCommand::AgentStatus(args)) => set_agent_status(session, args).await,
        AdminCommand::Set(SetCommand::ClientPermissions(args)) => {
            set_permissions(session, args).await
        }
        AdminCommand::Get(GetCommand::ClientPermissions(args)) => {
            require_role(session, &["admin", "manager"]).await?;
            let permissions = v1::client_permissions(args.testflinger_client_id.as_deref());
            match session.call(permissions).await {
                Ok(permissions) => println!("{}", pyjson::dumps(&permissions)),
                Err(failure @ Failure::Status { status: 404, .. }) => {
                    eprintln!("ERROR: {}", failure.message())
                }
                Err(Failure::Status { .. }) => {}
                Err(failure) => return Err(failure.into_error()),
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Delete(DeleteCommand::ClientPermissions(args)) => {
            require_role(session, &["admin"]).await?;
            let Some(id) = args.testflinger_client_id else {
                bail!("Error: client_id cannot be empty");
            };
            match session.call(v1::delete_client(&id)).await {
                Ok(_) => println!("Succesfully deleted {id} from database"),
                // The reference logs these below its log level: nothing shows.
                Err(Failure::Status {
                    status: 404 | 422, ..
                }) => {}
                Err(failure) => return Err(failure.into_error()),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The states during which an agent is busy with a job.
const BUSY: &[&str] = &["setup", "provision", "test", "allocate", "reserve"];

async fn set_agent_status(session: &Session, args: AgentStatusArgs) -> anyhow::Result<ExitCode> {
    let client_id = require_role(session, &["admin"]).await?;
    let (state, comment) = match args.status {
        AgentStatus::Online => ("waiting", String::new()),
        AgentStatus::Offline => match &args.comment {
            Some(reason) => (
                "offline",
                format!("Set to offline by {client_id}. Reason: {reason}"),
            ),
            None => bail!("Comment is required when setting agent status to offline."),
        },
        AgentStatus::Maintenance => (
            "maintenance",
            format!("Set to offline by {client_id} for lab-related task."),
        ),
    };
    for agent in &args.agents {
        let current = match session.call(v1::agent(agent)).await {
            Ok(data) => data
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            Err(failure) => {
                report_agent_failure(agent, failure);
                continue;
            }
        };
        let busy = BUSY.contains(&current.as_str());
        if busy && state == "waiting" {
            println!("Could not modify {agent} in its current state");
            continue;
        }
        let report = json!({"state": state, "comment": comment});
        match session.call(v1::report_agent(agent, &report)).await {
            Ok(_) if busy => {
                println!(
                    "Agent {agent} processing job. Status {state} deferred until job completion"
                )
            }
            Ok(_) => println!("Agent {agent} status is now: {state}"),
            Err(failure) => report_agent_failure(agent, failure),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_agent_failure(agent: &str, failure: Failure) {
    match failure.status() {
        Some(404) => println!("Agent {agent} does not exist."),
        Some(status) => println!("Exception raised when setting status for {agent}: {status}"),
        None => println!(
            "Exception raised when setting status for {agent}: {}",
            failure.message()
        ),
    }
}

async fn set_permissions(session: &Session, args: SetPermissionsArgs) -> anyhow::Result<ExitCode> {
    require_role(session, &["admin", "manager"]).await?;
    let mut body: Map<String, Value> = match &args.json {
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => bail!("Error parsing JSON: expected an object"),
            Err(e) => bail!("Error parsing JSON: {e}"),
        },
        None => {
            let mut body = Map::new();
            let mut set = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    body.insert(key.to_string(), value);
                }
            };
            set(
                "client_id",
                args.testflinger_client_id.clone().map(Value::from),
            );
            set(
                "client_secret",
                args.testflinger_client_secret.clone().map(Value::from),
            );
            set(
                "max_priority",
                parse_json("max_priority", args.max_priority.as_deref())?,
            );
            set(
                "max_reservation_time",
                parse_json("max_reservation_time", args.max_reservation.as_deref())?,
            );
            set("role", args.role.clone().map(Value::from));
            set("email", args.email.clone().map(Value::from));
            body
        }
    };
    let Some(client_id) = body
        .remove("client_id")
        .and_then(|v| v.as_str().map(str::to_string))
    else {
        bail!("Error: client_id cannot be empty");
    };
    match session
        .call(v1::put_client_permissions(&client_id, &Value::Object(body)))
        .await
    {
        Ok(reply) => println!("{}", String::from_utf8_lossy(&reply.body).trim_end()),
        Err(Failure::Status {
            status: 400 | 403 | 422,
            message,
        }) => eprintln!("ERROR: {message}"),
        Err(failure) => eprintln!(
            "ERROR: Failed to set client permissions: {}",
            failure.message()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_json(field: &str, text: Option<&str>) -> anyhow::Result<Option<Value>> {
    match text {
        None => Ok(None),
        Some(text) => match serde_json::from_str(text) {
            Ok(value) => Ok(Some(value)),
            Err(e) => bail!("Error parsing {field} JSON: {e}"),
        },
    }
}
