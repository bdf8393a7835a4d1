//! The agent's decisions about a job, without I/O: which phase runs next, whether a
//! phase is due or skipped (and the reference's words for why), what a failure ends, what
//! a stop means, and each phase's limits. The runner (`job.rs`) carries them out; these
//! rules are unit-tested here in-process.

use std::collections::BTreeMap;

use crate::job::definition::NotAsked;
use crate::job::{JobDefinition, Phase};

/// The reference's exit code when the agent could not run the phase command at all.
pub const RUNNER_FAILED: i32 = 100;
/// The longest cleanup of an agent that was told to stop, in seconds.
pub const STOPPING_CLEANUP_SECONDS: i64 = 60;

/// Whether `phase` runs for `job`: the command it runs, or the log line saying why not.
pub fn due_command<'c>(
    job: &JobDefinition,
    phase: Phase,
    configured: Option<&'c str>,
    attachments_unpacked: bool,
) -> Result<&'c str, String> {
    let Some(command) = configured else {
        return Err(format!("No {phase}_command configured, skipping..."));
    };
    match job.asks_for(phase, attachments_unpacked) {
        Ok(()) => Ok(command),
        Err(NotAsked::NoData) => Err(format!(
            "No {} defined in job data, skipping...",
            phase.data_key()
        )),
        Err(NotAsked::Skipped) => Err(format!("Skipping {phase} phase as requested in job data")),
    }
}

/// What the runner does next with a job's main phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run (or skip, if not due) this phase.
    Run(Phase),
    /// The agent is stopping before any phase ran: the job goes back to its queue.
    GiveBack,
    /// The agent is stopping: the first phase still due is recorded as killed.
    NotRun(Phase),
    /// The main phases are over (all ran, or one ended the job): on to cleanup.
    Cleanup,
}

/// Where a job's main phases stand: the exit codes so far and which phase is next.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    next: usize,
    statuses: BTreeMap<Phase, i32>,
    /// A phase other than test failed: the main phases are over.
    failed: bool,
    /// The `job_end` event's detail: `<phase>_fail`, `recovery_fail`, … as last noted.
    end_reason: Option<String>,
}

impl Progress {
    /// The next step. `stopping`: the agent was told to stop; `is_due` says whether a
    /// phase would run (a command is configured and the job asks for it).
    pub fn next_step(&self, stopping: bool, is_due: impl Fn(Phase) -> bool) -> Step {
        if self.failed || self.next >= Phase::MAIN.len() {
            return Step::Cleanup;
        }
        if stopping {
            if self.statuses.is_empty() {
                return Step::GiveBack;
            }
            return match Phase::MAIN[self.next..].iter().find(|p| is_due(**p)) {
                Some(phase) => Step::NotRun(*phase),
                None => Step::Cleanup,
            };
        }
        Step::Run(Phase::MAIN[self.next])
    }

    /// Notes that `phase` exited with `exit_code` (0 when skipped) and what that means:
    /// a failed test still lets allocate and reserve run; any other failure ends the
    /// main phases. `event` is the job event the result was reported as.
    pub fn record(&mut self, phase: Phase, exit_code: i32, event: &str) {
        if Phase::MAIN.get(self.next) == Some(&phase) {
            self.next += 1;
        }
        if exit_code != 0 && phase != Phase::Test {
            self.failed = true;
            self.note_end_reason(event);
        }
    }

    /// Records an exit code for the job's statuses (only phases that ran have one).
    pub fn record_status(&mut self, phase: Phase, exit_code: i32) {
        self.statuses.insert(phase, exit_code);
    }

    /// Notes why the job ends other than normally (the last reason noted is the one
    /// reported). It does not end the main phases by itself: a stopped agent's test, for
    /// one, still has the next due phase recorded as killed.
    pub fn note_end_reason(&mut self, reason: &str) {
        self.end_reason = Some(reason.to_string());
    }

    /// `normal_exit`, or why the job ended early.
    pub fn end_reason(&self) -> &str {
        self.end_reason.as_deref().unwrap_or("normal_exit")
    }

    /// The exit codes of the phases that ran, in phase order.
    pub fn statuses(&self) -> &BTreeMap<Phase, i32> {
        &self.statuses
    }
}

/// The limits a phase runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Seconds the phase may run (none for reserve, which holds the device on purpose).
    pub global_timeout: Option<u64>,
    /// Seconds the phase may go without printing (only the test phase).
    pub output_timeout: Option<u64>,
    /// Whether a cancelled job stops the phase (provisioning is never cut short).
    pub cancellable: bool,
}

/// The limits of `phase` given the job's and the agent's timeouts (already combined by
/// `Config::effective_timeout`). A stopping agent's cleanup gets at most a minute, as
/// supervisors kill soon after.
pub fn limits(phase: Phase, global_timeout: i64, output_timeout: i64, stopping: bool) -> Limits {
    let global_timeout = if stopping {
        global_timeout.min(STOPPING_CLEANUP_SECONDS)
    } else {
        global_timeout
    };
    Limits {
        global_timeout: (phase != Phase::Reserve).then_some(global_timeout.max(0) as u64),
        output_timeout: (phase == Phase::Test).then_some(output_timeout.max(0) as u64),
        cancellable: phase != Phase::Provision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(value: serde_json::Value) -> JobDefinition {
        serde_json::from_value(value).unwrap()
    }

    /// Runs the main phases with `exit_codes` (0 for those not listed) and returns the
    /// steps taken.
    fn run(exit_codes: &[(Phase, i32)], stop_after: Option<Phase>) -> (Vec<Step>, Progress) {
        let mut progress = Progress::default();
        let mut steps = Vec::new();
        let mut stopping = false;
        loop {
            let step = progress.next_step(stopping, |_| true);
            steps.push(step.clone());
            let Step::Run(phase) = step else {
                return (steps, progress);
            };
            let code = exit_codes
                .iter()
                .find(|(p, _)| *p == phase)
                .map_or(0, |(_, c)| *c);
            progress.record_status(phase, code);
            progress.record(phase, code, &format!("{phase}_fail"));
            stopping |= stop_after == Some(phase);
        }
    }

    #[test]
    fn all_main_phases_run_in_order_then_cleanup() {
        let (steps, progress) = run(&[], None);
        let mut expected: Vec<Step> = Phase::MAIN.into_iter().map(Step::Run).collect();
        expected.push(Step::Cleanup);
        assert_eq!(steps, expected);
        assert_eq!(progress.end_reason(), "normal_exit");
    }

    #[test]
    fn a_failed_provision_goes_straight_to_cleanup() {
        let (steps, progress) = run(&[(Phase::Provision, 3)], None);
        assert_eq!(
            steps,
            [
                Step::Run(Phase::Setup),
                Step::Run(Phase::Provision),
                Step::Cleanup
            ]
        );
        assert_eq!(progress.end_reason(), "provision_fail");
    }

    #[test]
    fn a_failed_test_still_lets_allocate_and_reserve_run() {
        let (steps, progress) = run(&[(Phase::Test, 1)], None);
        assert!(steps.contains(&Step::Run(Phase::Reserve)));
        assert_eq!(progress.end_reason(), "normal_exit");
        assert_eq!(progress.statuses()[&Phase::Test], 1);
    }

    #[test]
    fn a_stop_before_any_phase_gives_the_job_back() {
        let progress = Progress::default();
        assert_eq!(progress.next_step(true, |_| true), Step::GiveBack);
    }

    #[test]
    fn a_stop_between_phases_names_the_next_phase_that_was_due() {
        let (steps, _) = run(&[], Some(Phase::Provision));
        assert_eq!(steps.last(), Some(&Step::NotRun(Phase::FirmwareUpdate)));
        let mut progress = Progress::default();
        progress.record_status(Phase::Setup, 0);
        progress.record(Phase::Setup, 0, "");
        let only_reserve_due = |phase| phase == Phase::Reserve;
        assert_eq!(
            progress.next_step(true, only_reserve_due),
            Step::NotRun(Phase::Reserve)
        );
        assert_eq!(progress.next_step(true, |_| false), Step::Cleanup);
    }

    #[test]
    fn a_test_cut_short_by_a_stop_still_has_the_next_due_phase_recorded() {
        let mut progress = Progress::default();
        for phase in [Phase::Setup, Phase::Provision, Phase::FirmwareUpdate] {
            progress.record_status(phase, 0);
            progress.record(phase, 0, "");
        }
        // The stop kills the test phase: its failure does not end the main phases.
        progress.note_end_reason("test_fail");
        progress.record_status(Phase::Test, 247);
        progress.record(Phase::Test, 247, "test_fail");
        let reserve_due = |phase| phase == Phase::Reserve;
        assert_eq!(
            progress.next_step(true, reserve_due),
            Step::NotRun(Phase::Reserve)
        );
        progress.note_end_reason("reserve_fail");
        assert_eq!(progress.end_reason(), "reserve_fail");
    }

    #[test]
    fn skipped_phases_say_why_in_the_references_words() {
        let job = job(json!({"test_data": {"skip": true}, "provision_data": {"url": "u"}}));
        assert_eq!(
            due_command(&job, Phase::Provision, None, false),
            Err("No provision_command configured, skipping...".into())
        );
        assert_eq!(
            due_command(&job, Phase::Test, Some("run"), false),
            Err("Skipping test phase as requested in job data".into())
        );
        assert_eq!(
            due_command(&job, Phase::Reserve, Some("run"), false),
            Err("No reserve_data defined in job data, skipping...".into())
        );
        assert_eq!(
            due_command(&job, Phase::Provision, Some("run"), false),
            Ok("run")
        );
        assert_eq!(due_command(&job, Phase::Setup, Some("s"), false), Ok("s"));
    }

    #[test]
    fn each_phase_has_its_own_limits() {
        let test = limits(Phase::Test, 3600, 900, false);
        assert_eq!(test.global_timeout, Some(3600));
        assert_eq!(test.output_timeout, Some(900));
        assert!(test.cancellable);
        assert_eq!(
            limits(Phase::Reserve, 3600, 900, false).global_timeout,
            None
        );
        assert!(!limits(Phase::Provision, 3600, 900, false).cancellable);
        let stopping = limits(Phase::Cleanup, 3600, 900, true);
        assert_eq!(stopping.global_timeout, Some(60));
        assert_eq!(stopping.output_timeout, None);
    }
}
