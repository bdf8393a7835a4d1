//! The two kinds of log a job produces, as a type.

/// A job's log: what its phase commands print, or the device's serial console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogType {
    Output,
    Serial,
}

impl LogType {
    pub const ALL: [LogType; 2] = [LogType::Output, LogType::Serial];

    /// The name in paths (`/v1/result/<id>/log/<type>`) and in stored fragments.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogType::Output => "output",
            LogType::Serial => "serial",
        }
    }

    /// Its place in `ALL`, for tables indexed by log type.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub fn parse(name: &str) -> Option<LogType> {
        LogType::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for LogType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
