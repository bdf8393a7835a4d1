//! The lab at a glance: `list-queues`, `list-agents`, `agent-status`, `queue-status`.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use regex_lite::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

use super::session::{Failure, Session};
use crate::api::v1;
use crate::codec::pyjson;

#[derive(Args, Debug)]
pub struct JsonFlag {
    /// Print output in JSON format
    #[arg(long)]
    pub json: bool,
}

pub async fn list_queues(session: &Session, args: &JsonFlag) -> anyhow::Result<ExitCode> {
    eprintln!("WARNING: This only shows a curated list of queues with descriptions");
    let queues = match session.call(v1::queues()).await {
        Ok(Value::Object(queues)) => queues,
        Ok(_) => Map::new(),
        Err(Failure::Status { .. }) => {
            eprintln!("ERROR: Unable to get a list of queues from the server.");
            Map::new()
        }
        Err(failure) => return Err(failure.into_error()),
    };
    if args.json {
        println!("{}", pyjson::dumps(&Value::Object(queues)));
        return Ok(ExitCode::SUCCESS);
    }
    println!("Advertised queues on this server:");
    let mut names: Vec<&String> = queues.keys().collect();
    names.sort();
    for name in names {
        println!(" {name} - {}", text_of(&queues[name]));
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON value as Python's `str()` shows it in the reference's tables.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        other => pyjson::repr(other),
    }
}

const FIELDS: &[&str] = &[
    "name",
    "status",
    "location",
    "provision_type",
    "comment",
    "job_id",
    "queues",
];
const ONLINE_STATES: &[&str] = &[
    "waiting",
    "setup",
    "provision",
    "firmware_update",
    "test",
    "allocate",
    "reserve",
    "cleanup",
];
const OFFLINE_STATES: &[&str] = &["offline", "maintenance"];

#[derive(Args, Debug)]
pub struct ListAgentsArgs {
    /// Only the agent names, one per line
    #[arg(short = '1', conflicts_with_all = ["summary", "fields"])]
    pub names_only: bool,
    /// Counts of agents by state
    #[arg(long, conflicts_with = "fields")]
    pub summary: bool,
    /// Columns to show (name,status,location,provision_type,comment,job_id,queues)
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(FIELDS))]
    pub fields: Option<Vec<String>>,
    /// States to show, or hide with ^ (online, offline, maintenance, waiting, setup, …)
    #[arg(long, value_delimiter = ',', value_parser = parse_status_filter)]
    pub filter_status: Option<Vec<String>>,
    /// Only agents whose name matches this regular expression
    #[arg(long, value_parser = parse_regex)]
    pub filter_name: Option<Regex>,
    /// Only agents with a queue that matches this regular expression
    #[arg(long, value_parser = parse_regex)]
    pub filter_queues: Option<Regex>,
    /// Only agents whose location matches this regular expression
    #[arg(long, value_parser = parse_regex)]
    pub filter_location: Option<Regex>,
    /// Only agents whose provision type matches this regular expression
    #[arg(long, value_parser = parse_regex)]
    pub filter_provision_type: Option<Regex>,
    /// Only agents whose comment matches this regular expression
    #[arg(long, value_parser = parse_regex)]
    pub filter_comment: Option<Regex>,
}

fn parse_status_filter(text: &str) -> Result<String, String> {
    let text = text.trim();
    let state = text.strip_prefix('^').unwrap_or(text);
    let known = ["online", "offline"]
        .iter()
        .chain(ONLINE_STATES)
        .chain(&OFFLINE_STATES[1..]);
    if known.clone().any(|k| *k == state) {
        Ok(text.to_string())
    } else {
        let choices: Vec<&str> = known.copied().collect();
        Err(format!(
            "invalid choice: '{text}' (choose from {})",
            choices.join(", ")
        ))
    }
}

fn parse_regex(text: &str) -> Result<Regex, String> {
    Regex::new(text).map_err(|e| format!("Invalid regex '{text}', error: {e}"))
}

/// The states a `--filter-status` list lets through.
fn allowed_states(filter: &[String]) -> Vec<&'static str> {
    let expand = |state: &str| -> Vec<&'static str> {
        match state {
            "online" => ONLINE_STATES.to_vec(),
            "offline" => OFFLINE_STATES.to_vec(),
            other => ONLINE_STATES
                .iter()
                .chain(OFFLINE_STATES)
                .copied()
                .filter(|s| *s == other)
                .collect(),
        }
    };
    let (excluded, included): (Vec<&String>, Vec<&String>) =
        filter.iter().partition(|s| s.starts_with('^'));
    let mut allowed: Vec<&'static str> = if included.is_empty() {
        ONLINE_STATES
            .iter()
            .chain(OFFLINE_STATES)
            .copied()
            .collect()
    } else {
        included.iter().flat_map(|s| expand(s)).collect()
    };
    let removed: Vec<&'static str> = excluded
        .iter()
        .flat_map(|s| expand(s.trim_start_matches('^')))
        .collect();
    allowed.retain(|s| !removed.contains(s));
    allowed
}

pub async fn list_agents(session: &Session, args: &ListAgentsArgs) -> anyhow::Result<ExitCode> {
    let agents = match session.call(v1::agents()).await {
        Ok(Value::Array(agents)) => agents,
        Ok(_) => Vec::new(),
        Err(failure) => bail!("Error retrieving agents: {}", failure.message()),
    };
    let field =
        |agent: &Value, name: &str| -> String { agent.get(name).map(text_of).unwrap_or_default() };
    let allowed = args.filter_status.as_deref().map(allowed_states);
    let matches =
        |regex: &Option<Regex>, value: &str| regex.as_ref().is_none_or(|r| r.is_match(value));
    let selected: Vec<&Value> = agents
        .iter()
        .filter(|agent| {
            let state = agent
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or_default();
            allowed
                .as_ref()
                .is_none_or(|allowed| allowed.contains(&state))
                && matches(&args.filter_name, &field(agent, "name"))
                && matches(&args.filter_location, &field(agent, "location"))
                && matches(&args.filter_provision_type, &field(agent, "provision_type"))
                && matches(&args.filter_comment, &field(agent, "comment"))
                && args.filter_queues.as_ref().is_none_or(|regex| {
                    agent
                        .get("queues")
                        .and_then(Value::as_array)
                        .is_some_and(|queues| queues.iter().any(|q| regex.is_match(&text_of(q))))
                })
        })
        .collect();

    if args.names_only {
        for agent in selected {
            println!("{}", field(agent, "name"));
        }
    } else if args.summary {
        print_summary(&selected);
    } else {
        let default: Vec<String> = FIELDS[..5].iter().map(|s| s.to_string()).collect();
        print_table(&selected, args.fields.as_ref().unwrap_or(&default));
    }
    Ok(ExitCode::SUCCESS)
}

/// A heading as the reference prints it: bold, though only for a person at a terminal.
fn bold(text: &str) -> String {
    if crate::colour::wanted(&std::io::stdout()) {
        format!("\x1b[1m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn print_table(agents: &[&Value], fields: &[String]) {
    if agents.is_empty() {
        println!("No agents found matching the filter criteria.");
        return;
    }
    // A cell: the field's text; `-` when missing, `None` when null. Widths use the
    // length Python's `str()` gives (a list's repr, not the joined text), as the reference.
    let cell = |agent: &Value, name: &str| -> (String, usize) {
        let key = if name == "status" { "state" } else { name };
        match agent.get(key) {
            None => ("-".into(), 1),
            Some(Value::Null) => ("None".into(), 4),
            Some(Value::Array(items)) => (
                text_of(&Value::Array(items.clone())),
                pyjson::repr(&Value::Array(items.clone())).chars().count(),
            ),
            Some(value) => {
                let text = text_of(value);
                let width = text.chars().count();
                (text, width)
            }
        }
    };
    let titles: Vec<String> = fields
        .iter()
        .map(|f| f.replace('_', " ").to_uppercase())
        .collect();
    let widths: Vec<usize> = fields
        .iter()
        .zip(&titles)
        .map(|(field, title)| {
            agents
                .iter()
                .map(|agent| cell(agent, field).1)
                .max()
                .unwrap_or(0)
                .max(title.chars().count())
        })
        .collect();
    let header: Vec<String> = titles
        .iter()
        .zip(&widths)
        .map(|(title, width)| bold(&format!("{title:<width$}")))
        .collect();
    println!("{}", header.join("  "));
    for agent in agents {
        let row: Vec<String> = fields
            .iter()
            .zip(&widths)
            .map(|(field, width)| format!("{:<width$}", cell(agent, field).0))
            .collect();
        println!("{}", row.join("  "));
    }
}

fn print_summary(agents: &[&Value]) {
    let count = |state: &str| {
        agents
            .iter()
            .filter(|a| a.get("state").and_then(Value::as_str) == Some(state))
            .count()
    };
    println!(
        "{}  {}  {}",
        bold(&format!("{:<16}", "STATE")),
        bold(&format!("{:<6}", "COUNT")),
        bold(&format!("{:<6}", "TOTAL"))
    );
    for (title, states) in [("Online:", ONLINE_STATES), ("Offline:", OFFLINE_STATES)] {
        let total: usize = states.iter().map(|s| count(s)).sum();
        println!("{title:<26}{total}");
        for state in states {
            let n = count(state);
            if n > 0 {
                println!("  {state:<16}{n}");
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct AgentStatusArgs {
    /// The agent's name, as `list-agents` shows it
    pub agent_name: String,
    /// Print the whole agent record as JSON
    #[arg(long)]
    pub json: bool,
}

pub async fn agent_status(session: &Session, args: &AgentStatusArgs) -> anyhow::Result<ExitCode> {
    let agent = match session.call(v1::agent(&args.agent_name)).await {
        Ok(agent) => agent,
        Err(failure) if failure.status() == Some(404) => {
            bail!("Agent '{}' does not exist.", args.agent_name)
        }
        Err(Failure::Fatal(message)) => bail!("{message}"),
        Err(_) => bail!(
            "Unable to retrieve agent status from the server, check your connection or try again later."
        ),
    };
    if args.json {
        let mut record = agent.as_object().cloned().unwrap_or_default();
        if let Some(name) = record.remove("name") {
            record.insert("agent".into(), name);
        }
        if let Some(state) = record.remove("state") {
            record.insert("status".into(), state);
        }
        println!("{}", pyjson::dumps_sorted_compact(&Value::Object(record)));
    } else {
        match agent.get("state").and_then(Value::as_str) {
            Some(state) => println!("{state}"),
            None => bail!(
                "The server's record of agent '{}' has no state",
                args.agent_name
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct QueueStatusArgs {
    /// The queue, as jobs name it in `job_queue`
    pub queue_name: String,
    /// List the jobs, not only their numbers
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print output in JSON format
    #[arg(long)]
    pub json: bool,
}

pub async fn queue_status(session: &Session, args: &QueueStatusArgs) -> anyhow::Result<ExitCode> {
    let queue = &args.queue_name;
    let unavailable = "Unable to retrieve queue status from the server, check your connection or try again later.";
    let agents: Vec<QueueAgent> = match session.call(v1::queue_agents(queue)).await {
        Ok(Value::Array(agents)) => agents
            .iter()
            .map(|agent| QueueAgent {
                name: agent.get("name").cloned().unwrap_or(Value::Null),
                status: agent.get("state").cloned().unwrap_or(Value::Null),
            })
            .collect(),
        Ok(_) => bail!(unavailable),
        Err(Failure::Status { status: 204, .. }) => {
            bail!("No agent is listening on queue '{queue}'.")
        }
        Err(Failure::Status {
            status: 404,
            message,
        }) => bail!("{message}"),
        Err(Failure::Fatal(message)) => bail!("{message}"),
        Err(_) => bail!(unavailable),
    };
    let jobs = match session.call(v1::queue_jobs(queue)).await {
        Ok(Value::Array(jobs)) => jobs,
        _ => Vec::new(),
    };
    let (mut waiting, mut running, mut completed) = (Vec::new(), Vec::new(), Vec::new());
    for job in &jobs {
        let created_at = match job.get("created_at") {
            Some(Value::Object(date)) => date.get("$date").cloned().unwrap_or(Value::Null),
            Some(other) => other.clone(),
            None => Value::Null,
        };
        let entry = QueueJob {
            job_id: job.get("job_id").cloned().unwrap_or(Value::Null),
            created_at,
        };
        let state = job
            .get("job_state")
            .and_then(Value::as_str)
            .map(str::to_lowercase);
        match state.as_deref() {
            Some("waiting") => waiting.push(entry),
            Some("complete") => completed.push(entry),
            Some("cancelled") => {}
            _ => running.push(entry),
        }
    }
    if args.json {
        let out = QueueStatusJson {
            queue,
            agents: &agents,
            jobs_waiting: &waiting,
            jobs_running: args.verbose.then_some(&running),
            jobs_completed: args.verbose.then_some(&completed),
        };
        println!("{}", pyjson::dumps_indented(&out, 2));
        return Ok(ExitCode::SUCCESS);
    }
    let count = |status: &str| {
        agents
            .iter()
            .filter(|a| a.status.as_str() == Some(status))
            .count()
    };
    let (available, offline) = (count("waiting"), count("offline"));
    println!("Agents in queue: {}", agents.len());
    println!("Available:       {available}");
    println!("Busy:            {}", agents.len() - available - offline);
    println!("Offline:         {offline}");
    if args.verbose {
        let sections = [
            ("Jobs Waiting:", &waiting),
            ("Jobs Running:", &running),
            ("Jobs Completed:", &completed),
        ];
        for (title, list) in sections {
            if list.is_empty() {
                continue;
            }
            println!();
            println!("{title}");
            for job in list {
                let id = job.job_id.as_str().unwrap_or_default();
                println!("  {id} - {}", created_text(&job.created_at));
            }
        }
    } else {
        println!("Jobs waiting:    {}", waiting.len());
        println!("Jobs running:    {}", running.len());
        println!("Jobs completed:   {}", completed.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// `queue-status --json`, keys in the reference's order (its dicts keep insertion order).
#[derive(Serialize)]
struct QueueStatusJson<'a> {
    queue: &'a str,
    agents: &'a [QueueAgent],
    jobs_waiting: &'a [QueueJob],
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs_running: Option<&'a Vec<QueueJob>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs_completed: Option<&'a Vec<QueueJob>>,
}

#[derive(Serialize)]
struct QueueAgent {
    name: Value,
    status: Value,
}

#[derive(Serialize)]
struct QueueJob {
    job_id: Value,
    created_at: Value,
}

/// `YYYY-MM-DD HH:MM:SS` of an ISO time, in its own offset; `Unknown` when empty.
fn created_text(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    if text.is_empty() {
        return "Unknown".into();
    }
    match (text.get(..10), text.get(10..11), text.get(11..19)) {
        (Some(date), Some("T" | " "), Some(time)) => format!("{date} {time}"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::allowed_states;

    #[test]
    fn status_filters_expand_like_the_reference() {
        let s = |v: &[&str]| allowed_states(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["offline"]), ["offline", "maintenance"]);
        assert_eq!(s(&["^online"]), ["offline", "maintenance"]);
        assert_eq!(s(&["online", "^test"]).len(), 7);
    }
}
