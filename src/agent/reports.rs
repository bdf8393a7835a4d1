//! The bodies of the agent's reports on a job, in one place: the server reads each
//! field, so their shapes are the protocol.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::plan::RUNNER_FAILED;
use crate::job::{JobState, Phase};

/// The job is in `state` (a phase, or `allocated`).
pub fn state(state: JobState) -> Value {
    json!({"job_state": state})
}

/// Puts a job back in its queue: the server requeues a job reported `waiting`.
pub fn requeue() -> Value {
    state(JobState::Waiting)
}

/// The exit codes of the phases that ran (the server replaces the whole map).
pub fn statuses(statuses: &BTreeMap<Phase, i32>) -> Value {
    let statuses: serde_json::Map<String, Value> = statuses
        .iter()
        .map(|(phase, code)| (phase.to_string(), json!(code)))
        .collect();
    json!({"status": statuses})
}

/// Ends a job the agent could not even start, with a failed setup so that it does not
/// read as passed.
pub fn could_not_start() -> Value {
    json!({"status": {"setup": RUNNER_FAILED}, "job_state": JobState::Complete})
}

/// How a provisioning went, for the agent's provision history.
pub fn provision_log(job_id: &str, exit_code: i32, detail: &str) -> Value {
    json!({"job_id": job_id, "exit_code": exit_code, "detail": detail})
}

/// The end of a job: the statuses of `testflinger-outcome.json` (`outcome_file`), and
/// `complete`.
pub fn completion(mut outcome_file: Value) -> Value {
    if let Some(outcome) = outcome_file.as_object_mut() {
        outcome.remove("output");
        outcome.remove("serial");
        outcome.insert("job_state".into(), json!(JobState::Complete));
    }
    outcome_file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_have_the_shapes_the_server_reads() {
        assert_eq!(requeue(), json!({"job_state": "waiting"}));
        assert_eq!(
            state(JobState::Phase(Phase::FirmwareUpdate)),
            json!({"job_state": "firmware_update"})
        );
        let codes = BTreeMap::from([(Phase::Test, 1), (Phase::Setup, 0)]);
        assert_eq!(statuses(&codes), json!({"status": {"setup": 0, "test": 1}}));
        assert_eq!(
            completion(json!({"status": {"test": 0}, "output": "x"})),
            json!({"status": {"test": 0}, "job_state": "complete"})
        );
    }
}
