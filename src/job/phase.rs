//! The test phases as a type.

use serde::{Deserialize, Serialize};

/// A test phase; the order of the variants is the order the agent runs them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Setup,
    Provision,
    FirmwareUpdate,
    Test,
    Allocate,
    Reserve,
    Cleanup,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Setup,
        Phase::Provision,
        Phase::FirmwareUpdate,
        Phase::Test,
        Phase::Allocate,
        Phase::Reserve,
        Phase::Cleanup,
    ];

    /// The phases the agent runs in order before `cleanup` (which always runs, last).
    pub const MAIN: [Phase; 6] = {
        let mut main = [Phase::Setup; 6];
        let mut at = 0;
        while at < main.len() {
            main[at] = Phase::ALL[at];
            at += 1;
        }
        main
    };

    /// The phases whose data may carry attachments (each has its directory in the
    /// attachments archive).
    pub const WITH_ATTACHMENTS: [Phase; 3] = [Phase::Provision, Phase::FirmwareUpdate, Phase::Test];

    /// The wire names of all phases, in order (for argument parsers and messages).
    pub const NAMES: [&'static str; 7] = {
        let mut names = [""; 7];
        let mut at = 0;
        while at < names.len() {
            names[at] = Phase::ALL[at].as_str();
            at += 1;
        }
        names
    };

    /// The name used on the wire (`<phase>_status`, log fragments, job states).
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Provision => "provision",
            Phase::FirmwareUpdate => "firmware_update",
            Phase::Test => "test",
            Phase::Allocate => "allocate",
            Phase::Reserve => "reserve",
            Phase::Cleanup => "cleanup",
        }
    }

    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|phase| phase.as_str() == name)
    }

    /// Whether the phase runs only when the job has `<phase>_data` (setup and cleanup
    /// always run).
    pub fn needs_data(self) -> bool {
        !matches!(self, Phase::Setup | Phase::Cleanup)
    }

    /// Whether the phase's data may carry attachments.
    pub fn takes_attachments(self) -> bool {
        Phase::WITH_ATTACHMENTS.contains(&self)
    }

    /// The job field with this phase's data: `test_data`, …
    pub fn data_key(self) -> String {
        format!("{self}_data")
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
