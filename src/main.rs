//! `tf`: one binary for every role of a Testflinger lab. This file only works out which
//! role was asked for (by subcommand or by the name the binary was called under) and
//! hands over.

mod agent;
mod api;
mod job;
mod server;
mod store;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tf",
    version,
    about = "Testflinger-compatible hardware test lab in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the lab server: the Testflinger v1 HTTP API on SQLite
    Serve(server::config::ServeArgs),
    /// Manage the server's API clients directly on its data dir (on the lab host)
    Clients(server::admin::ClientsArgs),
    /// Run the agent of one device: take jobs from the server and run their phases
    Agent(agent::config::AgentArgs),
}

/// Names the binary may be installed under (a symlink or a copy), and the subcommand
/// each one stands for.
const ROLE_NAMES: &[(&str, &str)] = &[
    ("testflinger-server", "serve"),
    ("testflinger-agent", "agent"),
];

/// The command line, with the subcommand implied by the program's name put in.
fn arguments() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let program = args
        .first()
        .and_then(|path| Path::new(path).file_name())
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    if let Some((_, subcommand)) = ROLE_NAMES.iter().find(|(name, _)| *name == program) {
        args.insert(1, subcommand.into());
    }
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(arguments());
    let outcome = match cli.command {
        Command::Serve(args) => {
            init_logging();
            server::config::Config::resolve(args).and_then(run_server)
        }
        Command::Clients(args) => {
            init_logging();
            server::admin::run(args)
        }
        // The agent logs where its config says.
        Command::Agent(args) => agent::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tf: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(config: server::config::Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(server::serve(config))
}

/// Logs go to stderr; `RUST_LOG` picks the level (info by default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
