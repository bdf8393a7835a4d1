//! Whether output may carry colour and other ANSI styling: only for a person at a
//! terminal, and not when they asked for none with `NO_COLOR` (https://no-color.org).
//! Logs and listings read by machines (pipes, files, journald) stay plain.

use std::io::IsTerminal;

pub fn wanted(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}
