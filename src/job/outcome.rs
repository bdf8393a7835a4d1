//! What became of a finished job, beyond its state word: it passed, failed in a phase,
//! was cancelled, timed out, or the lab (not the test) failed. Derived from the per-phase
//! exit codes the agent reports, the job's state, and, for a killed phase, the line the
//! agent wrote into that phase's output when a timeout or its own stop cut it short.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::phase::Phase;
use super::state::JobState;

/// Which of the agent's timeouts stopped a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timeout {
    /// `global_timeout`: the phase ran too long.
    Global,
    /// `output_timeout`: the test phase printed nothing for too long.
    Output,
}

/// The exit code of a phase the agent killed (SIGKILL, −9 mod 256), as the reference's.
pub const KILLED: i32 = 247;
/// The device connectors' exit code for "device recovery failed".
pub const RECOVERY_FAILED: i32 = 46;

/// The lines the agents (the reference's and ours, word for word) write into a phase's
/// output when a timeout stops it.
const TIMEOUT_LINES: [(&str, Timeout); 2] = [
    ("ERROR: Global timeout reached! (", Timeout::Global),
    ("ERROR: Output timeout reached! (", Timeout::Output),
];

/// How the line starts that our agent writes into a phase's output when the agent
/// stopping cut the phase short or kept it from running (it was told to stop, or died
/// and found the job on restart): the lab's doing, not the test's.
pub const AGENT_STOPPED_LINE: &str = "ERROR: The agent stopped before this phase finished";

/// Why the agent killed a phase, as the line it wrote into the phase's output says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    Timeout(Timeout),
    AgentStopped,
}

impl KillReason {
    /// The reason whose line `output` holds, if any.
    pub fn found_in(output: &str) -> Option<KillReason> {
        let timeout = TIMEOUT_LINES
            .iter()
            .find(|(line, _)| output.contains(line))
            .map(|(_, timeout)| KillReason::Timeout(*timeout));
        timeout.or_else(|| {
            output
                .contains(AGENT_STOPPED_LINE)
                .then_some(KillReason::AgentStopped)
        })
    }
}

impl Timeout {
    fn as_str(self) -> &'static str {
        match self {
            Timeout::Global => "global",
            Timeout::Output => "output",
        }
    }

    fn parse(name: &str) -> Option<Timeout> {
        [Timeout::Global, Timeout::Output]
            .into_iter()
            .find(|timeout| timeout.as_str() == name)
    }
}

/// How a finished job ended. Serialised as `{"result": "<kind>", …}`, the `outcome` of
/// `GET /v1/result/<id>`, e.g. `{"result": "failed", "phase": "test", "exit_code": 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// Every phase that ran exited 0 (also when none ran).
    Passed,
    /// The job's own work failed: its test, or its reservation.
    Failed { phase: Phase, exit_code: i64 },
    /// Cancelled, before or while it ran.
    Cancelled,
    /// The agent killed `phase` when `timeout` ran out.
    TimedOut { phase: Phase, timeout: Timeout },
    /// The lab failed, not the job's work: a phase the lab runs to prepare, hand over or
    /// release the device (setup, provision, firmware_update, allocate, cleanup) failed,
    /// the device's recovery failed in any phase, or the agent stopping cut a phase short.
    InfrastructureFailure { phase: Phase, exit_code: i64 },
}

impl Outcome {
    /// The outcome of a job in `state` whose phases exited with `statuses` (`{phase: exit
    /// code}`); `None` while the job has not finished. A job that was cancelled while it
    /// ran is `cancelled` even though its agent ends it as `complete`: pass `cancelled`
    /// then. `killed_by(phase)` is asked only about a killed phase: why, if its output
    /// says.
    pub fn of(
        state: &str,
        statuses: &Map<String, Value>,
        killed_by: impl FnOnce(Phase) -> Option<KillReason>,
    ) -> Option<Outcome> {
        if !JobState::is_finished_name(state) {
            return None;
        }
        if state == JobState::Cancelled.as_str() {
            return Some(Outcome::Cancelled);
        }
        let failure = Phase::ALL.into_iter().find_map(|phase| {
            let code = statuses.get(phase.as_str())?.as_i64()?;
            (code != 0).then_some((phase, code))
        });
        let Some((phase, exit_code)) = failure else {
            return Some(Outcome::Passed);
        };
        let killed_by = (exit_code == i64::from(KILLED))
            .then(|| killed_by(phase))
            .flatten();
        if let Some(KillReason::Timeout(timeout)) = killed_by {
            return Some(Outcome::TimedOut { phase, timeout });
        }
        let the_jobs_own_work = matches!(phase, Phase::Test | Phase::Reserve);
        let the_labs_doing = !the_jobs_own_work
            || exit_code == i64::from(RECOVERY_FAILED)
            || killed_by == Some(KillReason::AgentStopped);
        Some(if the_labs_doing {
            Outcome::InfrastructureFailure { phase, exit_code }
        } else {
            Outcome::Failed { phase, exit_code }
        })
    }

    /// The compact form a database keeps: `passed`, `cancelled`, `failed:test:1`,
    /// `timed_out:test:output`, `infrastructure_failure:provision:2` (cheaper to read
    /// back for every row of a listing than JSON).
    pub fn encode(&self) -> String {
        match self {
            Outcome::Passed => "passed".into(),
            Outcome::Cancelled => "cancelled".into(),
            Outcome::Failed { phase, exit_code } => format!("failed:{phase}:{exit_code}"),
            Outcome::TimedOut { phase, timeout } => {
                format!("timed_out:{phase}:{}", timeout.as_str())
            }
            Outcome::InfrastructureFailure { phase, exit_code } => {
                format!("infrastructure_failure:{phase}:{exit_code}")
            }
        }
    }

    /// Reads what `encode` wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Outcome> {
        let Some((kind, rest)) = text.split_once(':') else {
            return match text {
                "passed" => Some(Outcome::Passed),
                "cancelled" => Some(Outcome::Cancelled),
                _ => None,
            };
        };
        let (phase, detail) = rest.split_once(':')?;
        let phase = Phase::parse(phase)?;
        Some(match kind {
            "failed" => Outcome::Failed {
                phase,
                exit_code: detail.parse().ok()?,
            },
            "infrastructure_failure" => Outcome::InfrastructureFailure {
                phase,
                exit_code: detail.parse().ok()?,
            },
            "timed_out" => Outcome::TimedOut {
                phase,
                timeout: Timeout::parse(detail)?,
            },
            _ => return None,
        })
    }

    /// The kind in a word or two: `passed`, `failed`, `cancelled`, `timed out`,
    /// `infrastructure failure`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut { .. } => "timed out",
            Outcome::InfrastructureFailure { .. } => "infrastructure failure",
        }
    }
}

/// `failed: test exited with 1`, `timed out: test hit the output timeout`, `passed`.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = self.label();
        match self {
            Outcome::Passed | Outcome::Cancelled => f.write_str(label),
            Outcome::Failed { phase, exit_code }
            | Outcome::InfrastructureFailure { phase, exit_code } => {
                write!(f, "{label}: {phase} exited with {exit_code}")
            }
            Outcome::TimedOut { phase, timeout } => {
                write!(f, "{label}: {phase} hit the {} timeout", timeout.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statuses(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// The outcome when no phase's output names a timeout.
    fn plain(state: &str, value: Value) -> Option<Outcome> {
        Outcome::of(state, &statuses(value), |_| None)
    }

    #[test]
    fn unfinished_jobs_have_no_outcome() {
        for state in [
            "waiting",
            "running",
            "setup",
            "test",
            "allocated",
            "cleanup",
        ] {
            assert_eq!(plain(state, json!({"setup": 0})), None, "{state}");
        }
    }

    #[test]
    fn the_derivation_table() {
        use Outcome::*;
        use Phase::*;
        let failed = |phase, exit_code| Failed { phase, exit_code };
        let infra = |phase, exit_code| InfrastructureFailure { phase, exit_code };
        // One row a case, as a table reads.
        #[rustfmt::skip]
        let table = [
            ("complete", json!({}), Passed),
            ("completed", json!({"setup": 0, "test": 0, "cleanup": 0}), Passed),
            ("cancelled", json!({}), Cancelled),
            // Cancelled mid-test: the killed phase does not make it a failure.
            ("cancelled", json!({"test": 247}), Cancelled),
            ("complete", json!({"setup": 0, "test": 1, "cleanup": 0}), failed(Test, 1)),
            // The first failure in phase order counts, not the map's (alphabetical) order.
            ("complete", json!({"allocate": 3, "test": 2}), failed(Test, 2)),
            ("complete", json!({"test": 0, "reserve": 1}), failed(Reserve, 1)),
            ("complete", json!({"test": 0, "cleanup": 4}), infra(Cleanup, 4)),
            ("complete", json!({"allocate": 1}), infra(Allocate, 1)),
            ("complete", json!({"setup": 1}), infra(Setup, 1)),
            ("complete", json!({"provision": 1, "cleanup": 0}), infra(Provision, 1)),
            ("complete", json!({"firmware_update": 2}), infra(FirmwareUpdate, 2)),
            // Device recovery failed, in any phase.
            ("complete", json!({"test": 46}), infra(Test, 46)),
            // Killed without a line saying why (an agent other than ours).
            ("complete", json!({"test": 247}), failed(Test, 247)),
            // Statuses that are not exit codes are not failures.
            ("complete", json!({"setup": null, "test": "x", "nonsense": 1}), Passed),
        ];
        for (state, value, expected) in table {
            assert_eq!(
                plain(state, value.clone()),
                Some(expected),
                "{state} {value}"
            );
        }
    }

    #[test]
    fn a_killed_phase_whose_output_names_a_timeout_timed_out() {
        let asked = std::cell::Cell::new(None);
        let outcome = Outcome::of(
            "complete",
            &statuses(json!({"setup": 0, "test": 247})),
            |phase| {
                asked.set(Some(phase));
                KillReason::found_in("begin\n\nERROR: Output timeout reached! (900s)\n")
            },
        );
        assert_eq!(asked.get(), Some(Phase::Test));
        assert_eq!(
            outcome,
            Some(Outcome::TimedOut {
                phase: Phase::Test,
                timeout: Timeout::Output
            })
        );
        let provision = Outcome::of("complete", &statuses(json!({"provision": 247})), |_| {
            KillReason::found_in("\nERROR: Global timeout reached! (14400s)\n")
        });
        assert_eq!(
            provision,
            Some(Outcome::TimedOut {
                phase: Phase::Provision,
                timeout: Timeout::Global
            })
        );
        // Only a killed phase is looked at.
        Outcome::of(
            "complete",
            &statuses(json!({"test": 1})),
            |_| -> Option<KillReason> {
                panic!("a phase that exited by itself was searched for a timeout")
            },
        );
    }

    #[test]
    fn a_phase_the_agents_stop_cut_short_is_the_labs_failure() {
        let output = format!("running\n\n{AGENT_STOPPED_LINE}: it was told to stop.\n");
        for phase in ["test", "reserve", "provision"] {
            let outcome = Outcome::of("complete", &statuses(json!({phase: 247})), |_| {
                KillReason::found_in(&output)
            });
            assert_eq!(
                outcome,
                Some(Outcome::InfrastructureFailure {
                    phase: Phase::parse(phase).unwrap(),
                    exit_code: 247
                }),
                "{phase}"
            );
        }
        // The line counts only for a killed phase.
        let outcome = Outcome::of("complete", &statuses(json!({"test": 1})), |_| {
            KillReason::found_in(&output)
        });
        assert_eq!(
            outcome,
            Some(Outcome::Failed {
                phase: Phase::Test,
                exit_code: 1
            })
        );
    }

    #[test]
    fn outcomes_read_and_serialise_for_people_and_scripts() {
        let failed = Outcome::Failed {
            phase: Phase::FirmwareUpdate,
            exit_code: 3,
        };
        assert_eq!(
            serde_json::to_value(failed).unwrap(),
            json!({"result": "failed", "phase": "firmware_update", "exit_code": 3})
        );
        assert_eq!(failed.to_string(), "failed: firmware_update exited with 3");
        let timed_out = Outcome::TimedOut {
            phase: Phase::Test,
            timeout: Timeout::Global,
        };
        assert_eq!(
            serde_json::to_value(timed_out).unwrap(),
            json!({"result": "timed_out", "phase": "test", "timeout": "global"})
        );
        assert_eq!(
            timed_out.to_string(),
            "timed out: test hit the global timeout"
        );
        assert_eq!(
            serde_json::to_value(Outcome::Passed).unwrap(),
            json!({"result": "passed"})
        );
        let infra = Outcome::InfrastructureFailure {
            phase: Phase::Provision,
            exit_code: 1,
        };
        assert_eq!(
            infra.to_string(),
            "infrastructure failure: provision exited with 1"
        );
        for outcome in [
            Outcome::Passed,
            Outcome::Cancelled,
            failed,
            timed_out,
            infra,
        ] {
            let text = serde_json::to_string(&outcome).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), outcome);
            assert_eq!(
                Outcome::decode(&outcome.encode()),
                Some(outcome),
                "{outcome}"
            );
        }
        assert_eq!(infra.encode(), "infrastructure_failure:provision:1");
        let bad = [
            "",
            "failed",
            "failed:test",
            "failed:nope:1",
            "failed:test:x",
            "timed_out:test:1",
            "passed:x",
            "failed:test:1:2",
        ];
        for text in bad {
            assert_eq!(Outcome::decode(text), None, "{text}");
        }
    }

    #[test]
    fn phases_serialise_under_their_wire_names() {
        for phase in Phase::ALL {
            assert_eq!(serde_json::to_value(phase).unwrap(), json!(phase.as_str()));
        }
        assert_eq!(Phase::NAMES[2], "firmware_update");
    }
}
