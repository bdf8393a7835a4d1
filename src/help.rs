//! The two shapes of the top-level help. As `tf`, the commands are grouped by the role
//! they belong to (clap lists subcommands in one flat section); installed under a
//! reference CLI's name, only the user commands are listed, as the reference lists them.

use std::fmt::Write;

use clap::{Command, Subcommand};

/// The headings of `tf --help` with their commands. The group without a list takes every
/// command the others do not name: the user commands, so a new one is never left out.
const GROUPS: &[(&str, Option<&[&str]>)] = &[
    ("Lab server", Some(&["serve", "clients", "backup"])),
    (
        "Agent (on each device host)",
        Some(&["agent", "device-connector"]),
    ),
    ("User commands", None),
    ("Other", Some(&["demo", "completions", "help"])),
];

/// `tf --help` with the commands under their roles' headings.
pub fn group_by_role(mut command: Command) -> Command {
    // Built, the command has its `help` subcommand too.
    command.build();
    let named: Vec<&str> = GROUPS
        .iter()
        .filter_map(|(_, names)| *names)
        .flatten()
        .copied()
        .collect();
    let visible: Vec<&Command> = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .collect();
    let width = visible
        .iter()
        .map(|sub| sub.get_name().len())
        .max()
        .unwrap_or(0);
    let styles = command.get_styles();
    let (header, literal) = (styles.get_header(), styles.get_literal());
    let mut groups = String::new();
    for (heading, names) in GROUPS {
        let _ = writeln!(groups, "{header}{heading}:{header:#}");
        let members = visible.iter().filter(|sub| match names {
            Some(names) => names.contains(&sub.get_name()),
            None => !named.contains(&sub.get_name()),
        });
        for sub in members {
            let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
            let name = sub.get_name();
            let _ = writeln!(groups, "  {literal}{name:<width$}{literal:#}  {about}");
        }
        groups.push('\n');
    }
    let template = format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}\
         {header}Options:{header:#}\n{{options}}{{after-help}}"
    );
    command.help_template(template)
}

/// The help of the binary installed as the reference CLI: the user commands alone.
pub fn user_commands_only(mut command: Command) -> Command {
    let client = crate::cli::ClientCommand::augment_subcommands(Command::new("client"));
    let others: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .filter(|name| client.find_subcommand(name).is_none())
        .collect();
    for name in others {
        command = command.mut_subcommand(name, |sub| sub.hide(true));
    }
    command
}
