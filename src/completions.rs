//! `tf completions <shell>`: clap's completion script for bash, zsh or fish, taught to
//! complete job ids from the local history where a command takes one, as the reference's
//! argcomplete does.

use clap::Args;
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh or fish
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// The client commands whose argument is a job id.
const TAKE_JOB_IDS: &[&str] = &[
    "artifacts",
    "cancel",
    "poll",
    "poll-serial",
    "status",
    "results",
    "show",
];

pub fn run(args: &CompletionsArgs, command: &mut clap::Command) -> anyhow::Result<()> {
    let shell: Shell = args.shell.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, command, &name, &mut script);
    let mut script = String::from_utf8(script)?;
    let commands = TAKE_JOB_IDS.join(" ");
    let ids = format!("{name} __job-ids 2>/dev/null");
    let function = name.replace('-', "__");
    if shell == Shell::Zsh {
        // clap leaves positional job ids to `_default`; complete them from the history.
        script = script.replace("':job_id:_default'", "':job_id:_tf_job_ids'");
    }
    let extra = match shell {
        Shell::Bash => format!(
            r#"
_{function}_job_ids() {{
    local word="${{COMP_WORDS[COMP_CWORD]}}"
    if [[ " {commands} " == *" ${{COMP_WORDS[1]}} "* && "$word" != -* && $COMP_CWORD -ge 2 ]]; then
        COMPREPLY=( $(compgen -W "$({ids})" -- "$word") )
        return 0
    fi
    _{function} "$@"
}}
complete -F _{function}_job_ids -o bashdefault -o default {name}
"#
        ),
        Shell::Fish => format!(
            "complete -c {name} -n '__fish_seen_subcommand_from {commands}' -f -a '({ids})'\n"
        ),
        _ => format!("\n_tf_job_ids() {{ compadd -- $({ids}) }}\n"),
    };
    script.push_str(&extra);
    print!("{script}");
    Ok(())
}

/// `tf __job-ids`: the job ids of the local history, newest last.
pub fn print_job_ids() {
    for id in crate::cli::history_job_ids() {
        println!("{id}");
    }
}
