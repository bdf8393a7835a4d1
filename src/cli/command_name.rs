//! The name the user runs the client by, for messages that tell them what to type next
//! (`tf cancel …`, or `testflinger-cli cancel …` where tf is installed under that name).

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandName {
    Tf,
    TestflingerCli,
    Testflinger,
}

impl CommandName {
    /// From the file name this process was started as (argv[0]); any name other than the
    /// reference's is `tf`.
    pub fn of_this_process() -> CommandName {
        std::env::args_os()
            .next()
            .map_or(CommandName::Tf, |program| {
                CommandName::from_program(&program)
            })
    }

    fn from_program(program: &OsStr) -> CommandName {
        match Path::new(program).file_name().and_then(OsStr::to_str) {
            Some("testflinger-cli") => CommandName::TestflingerCli,
            Some("testflinger") => CommandName::Testflinger,
            _ => CommandName::Tf,
        }
    }

    /// Under a reference CLI's name, what the client prints stays the reference's, for the
    /// scripts that parse it; as `tf` it may say more.
    pub fn is_reference(self) -> bool {
        self != CommandName::Tf
    }

    fn as_str(self) -> &'static str {
        match self {
            CommandName::Tf => "tf",
            CommandName::TestflingerCli => "testflinger-cli",
            CommandName::Testflinger => "testflinger",
        }
    }
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_the_programs_file_name() {
        let name = |path: &str| CommandName::from_program(OsStr::new(path)).to_string();
        assert_eq!(name("/usr/bin/testflinger-cli"), "testflinger-cli");
        assert_eq!(name("testflinger"), "testflinger");
        assert_eq!(name("./target/debug/tf"), "tf");
        assert_eq!(name("/opt/tf-1.0/bin/tf-static"), "tf");
    }
}
