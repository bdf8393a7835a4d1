//! `tf`: one binary for every role of a Testflinger lab. This file only works out which
//! role was asked for (by subcommand or by the name the binary was called under) and
//! hands over; src/main.rs is the binary around it. It is a library so that the fuzz
//! targets in fuzz/ can reach the parsers (feature `fuzzing`).

mod agent;
mod api;
mod cli;
mod codec;
mod colour;
mod completions;
mod connectors;
mod demo;
mod help;
mod job;
mod metrics;
mod private_file;
mod server;
mod store;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// `tf --version`: the crate version, the git commit and the target it was built for.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TF_GIT_COMMIT"),
    " ",
    env!("TF_TARGET"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "tf",
    version = VERSION,
    about = "Testflinger-compatible hardware test lab in one binary",
    infer_long_args = true
)]
struct Cli {
    #[command(flatten)]
    client: cli::GlobalOptions,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the lab server: the Testflinger v1 HTTP API on SQLite
    Serve(server::config::ServeArgs),
    /// Manage the server's API clients directly on its data dir (on the lab host)
    Clients(server::admin::ClientsArgs),
    /// Copy the server's database and archives to a directory while it runs
    Backup(server::backup::BackupArgs),
    /// Move the server's history from its SQLite data dir into an empty PostgreSQL database
    Migrate(server::migrate::MigrateArgs),
    /// Run the agent of one device: take jobs from the server and run their phases
    Agent(agent::config::AgentArgs),
    /// Run one stage of a device connector (what agents' phase commands call)
    DeviceConnector(connectors::ConnectorArgs),
    /// A whole lab on this machine: server, agent and a job, followed live
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh or fish)
    Completions(completions::CompletionsArgs),
    /// The job ids of the local history (for completion scripts)
    #[command(name = "__job-ids", hide = true)]
    JobIds,
    #[command(flatten)]
    Client(cli::ClientCommand),
}

/// Names the binary may be installed under (a symlink or a copy), and the subcommand
/// each one stands for ("" for the client, whose subcommand the user gives).
const ROLE_NAMES: &[(&str, &str)] = &[
    ("testflinger-server", "serve"),
    ("testflinger-agent", "agent"),
    ("testflinger-device-connector", "device-connector"),
    ("snappy-device-agent", "device-connector"),
    ("testflinger-cli", ""),
    ("testflinger", ""),
];

/// The command line, with the subcommand implied by the program's name put in.
fn arguments() -> (Vec<OsString>, String) {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let program = args
        .first()
        .and_then(|path| Path::new(path).file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("tf")
        .to_string();
    if let Some((_, subcommand)) = ROLE_NAMES.iter().find(|(name, _)| *name == program) {
        if !subcommand.is_empty() {
            args.insert(1, subcommand.into());
        }
    }
    (args, program)
}

/// Runs the role asked for on the command line; the whole of `tf`'s `main`.
pub fn main() -> ExitCode {
    let (args, program) = arguments();
    let command = Cli::command()
        .name(program.clone())
        .bin_name(program.clone());
    let mut command = if cli::CommandName::of_this_process().is_reference() {
        help::user_commands_only(command)
    } else {
        help::group_by_role(command)
    };
    let matches = match command.try_get_matches_from_mut(args) {
        Ok(matches) => matches,
        Err(error) => error.exit(),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.format(&mut command).exit(),
    };
    let outcome = match cli.command {
        None if cli::CommandName::of_this_process().is_reference() => {
            // As the reference: the help on stdout, exit 0.
            println!("{}", command.render_help());
            return ExitCode::SUCCESS;
        }
        None => {
            // A usage error, as with any tool that needs a command.
            eprint!("{}", command.render_help());
            return ExitCode::from(2);
        }
        Some(Command::Client(client)) => {
            if let Some(message) = cli::credential_pairing_error(&client) {
                command
                    .error(clap::error::ErrorKind::ArgumentConflict, message)
                    .exit();
            }
            return cli::run(cli.client, client);
        }
        Some(Command::Serve(args)) => {
            init_logging();
            server::config::Config::resolve(args).and_then(run_server)
        }
        Some(Command::Clients(args)) => {
            init_logging();
            server::admin::run(args)
        }
        Some(Command::Backup(args)) => server::backup::run(args),
        Some(Command::Migrate(args)) => server::migrate::run(args),
        // The agent logs where its config says.
        Some(Command::Agent(args)) => return agent::run(args),
        Some(Command::DeviceConnector(args)) => return connectors::run(args),
        Some(Command::Demo(args)) => demo::run(args),
        Some(Command::Completions(args)) => completions::run(&args, &mut command),
        Some(Command::JobIds) => {
            completions::print_job_ids();
            Ok(())
        }
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

/// Logs go to stderr, coloured only on a terminal; `RUST_LOG` picks the level (info by
/// default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour::wanted(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The positional arguments without a description, as `command path <ARG>`.
    fn undescribed(command: &clap::Command, path: &str, found: &mut Vec<String>) {
        for argument in command.get_positionals() {
            if argument.get_help().is_none() && !argument.is_hide_set() {
                found.push(format!("{path} <{}>", argument.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            undescribed(sub, &format!("{path} {}", sub.get_name()), found);
        }
    }

    #[test]
    fn every_positional_argument_is_described() {
        let mut found = Vec::new();
        undescribed(&super::Cli::command(), "tf", &mut found);
        assert!(found.is_empty(), "{found:#?}");
    }
}
