//! The test phases as a type.

use serde::{Deserialize, Serialize};

/// A test phase; the order of the variants is the order the agent runs them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
