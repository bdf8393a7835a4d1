//! The states a job goes through, as a type.

use super::phase::Phase;

/// Where a job is: queued, in one of its phases, holding its device for a multi-device
/// job, or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Waiting,
    /// Claimed by an agent that has not reported its first phase yet.
    Running,
    /// The agent is running this phase.
    Phase(Phase),
    /// The allocate phase is over and the device is held for the parent job.
    Allocated,
    Cancelled,
    /// The agent ended the job: agents post `complete`.
    Complete,
    /// The older schemas' spelling of `complete`.
    Completed,
}

impl JobState {
    /// Every state, in the order a job goes through them.
    pub const ALL: [JobState; 13] = [
        JobState::Waiting,
        JobState::Running,
        JobState::Phase(Phase::Setup),
        JobState::Phase(Phase::Provision),
        JobState::Phase(Phase::FirmwareUpdate),
        JobState::Phase(Phase::Test),
        JobState::Phase(Phase::Allocate),
        JobState::Allocated,
        JobState::Phase(Phase::Reserve),
        JobState::Phase(Phase::Cleanup),
        JobState::Cancelled,
        JobState::Complete,
        JobState::Completed,
    ];

    /// The states after which a job never runs again.
    pub const FINISHED: [JobState; 3] =
        [JobState::Cancelled, JobState::Complete, JobState::Completed];

    /// The wire names of the finished states (for SQL and messages).
    pub const FINISHED_NAMES: [&'static str; 3] = [
        JobState::FINISHED[0].as_str(),
        JobState::FINISHED[1].as_str(),
        JobState::FINISHED[2].as_str(),
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Running => "running",
            JobState::Phase(phase) => phase.as_str(),
            JobState::Allocated => "allocated",
            JobState::Cancelled => "cancelled",
            JobState::Complete => "complete",
            JobState::Completed => "completed",
        }
    }

    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// Whether the job will never run again: cancelled, or ended by its agent.
    pub fn is_finished(self) -> bool {
        JobState::FINISHED.contains(&self)
    }

    /// Whether the agent ended the job (either spelling).
    pub fn is_complete(self) -> bool {
        matches!(self, JobState::Complete | JobState::Completed)
    }

    /// Whether the state name `name` is a finished state (an unknown name is not). Asked
    /// for every row of a job listing, so it compares three names instead of parsing.
    pub fn is_finished_name(name: &str) -> bool {
        JobState::FINISHED_NAMES.contains(&name)
    }

    /// Whether the state name `name` says the agent ended the job.
    pub fn is_complete_name(name: &str) -> bool {
        JobState::parse(name).is_some_and(JobState::is_complete)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JobState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_name() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("finished"), None);
    }

    #[test]
    fn only_cancelled_and_the_two_completes_are_finished() {
        let finished: Vec<&str> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_finished())
            .map(JobState::as_str)
            .collect();
        assert_eq!(finished, ["cancelled", "complete", "completed"]);
        for state in JobState::ALL {
            assert_eq!(
                JobState::is_finished_name(state.as_str()),
                state.is_finished()
            );
            assert_eq!(
                JobState::is_complete_name(state.as_str()),
                state.is_complete()
            );
        }
        assert!(!JobState::is_finished_name("allocated"));
        assert!(JobState::is_complete_name("completed"));
        assert!(!JobState::is_complete_name("cancelled"));
    }
}
