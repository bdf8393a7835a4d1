//! A job as the agent receives it: the fields the agent acts on are typed, everything else
//! is kept as submitted. (The agent writes `testflinger.json` for the device connector
//! from the job as received, not from this view.)

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::phase::Phase;
use super::truthy::is_truthy;

/// A job definition with the fields the agent acts on typed. Unknown fields (and the
/// free-form parts of the phase data) stay in `other` and in each phase's data, and
/// serialize back unchanged. A typed field whose value has another type (a reference
/// server may pass `"60"` or `60.5` through) reads as absent, as the reference agent's
/// `.get()` with a default would take it, so such a job still runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobDefinition {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text"
    )]
    pub job_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text"
    )]
    pub job_queue: Option<String>,
    /// The multi-device job this one holds a device for.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text"
    )]
    pub parent_job_id: Option<String>,
    /// Seconds a phase may run (the agent's own limit when absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integer"
    )]
    pub global_timeout: Option<i64>,
    /// Seconds the test phase may go without printing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integer"
    )]
    pub output_timeout: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text"
    )]
    pub job_status_webhook: Option<String>,
    /// `complete` once the submitter's attachments archive is on the server.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "text"
    )]
    pub attachments_status: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "kept"
    )]
    pub provision_data: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "kept"
    )]
    pub firmware_update_data: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "kept"
    )]
    pub test_data: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "kept"
    )]
    pub allocate_data: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "kept"
    )]
    pub reserve_data: Option<Value>,
    /// Every other field, as submitted.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A string field; any other value reads as absent.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Value::deserialize(deserializer).map(|value| value.as_str().map(str::to_string))
}

/// An integer field; any other value reads as absent.
fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Value::deserialize(deserializer).map(|value| value.as_i64())
}

/// A field that is present stays present, `null` included (serde reads `null` as `None`).
fn kept<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Why a phase of a job does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAsked {
    /// The job has no (or empty) `<phase>_data`.
    NoData,
    /// `<phase>_data.skip` is set.
    Skipped,
}

impl JobDefinition {
    /// `<phase>_data` as submitted (setup and cleanup have none).
    pub fn phase_data(&self, phase: Phase) -> Option<&Value> {
        self.phase_data_slot(phase)?.as_ref()
    }

    fn phase_data_slot(&self, phase: Phase) -> Option<&Option<Value>> {
        match phase {
            Phase::Provision => Some(&self.provision_data),
            Phase::FirmwareUpdate => Some(&self.firmware_update_data),
            Phase::Test => Some(&self.test_data),
            Phase::Allocate => Some(&self.allocate_data),
            Phase::Reserve => Some(&self.reserve_data),
            Phase::Setup | Phase::Cleanup => None,
        }
    }

    /// Whether the job asks for `phase`, by the reference's rules: setup and cleanup
    /// always run; the others need truthy `<phase>_data` without a truthy `skip`. Once the
    /// attachments are unpacked (`attachments_unpacked`), data that held nothing but
    /// `attachments` no longer counts, as with the reference (which deletes them).
    pub fn asks_for(&self, phase: Phase, attachments_unpacked: bool) -> Result<(), NotAsked> {
        if !phase.needs_data() {
            return Ok(());
        }
        let data = self.phase_data(phase).filter(|data| is_truthy(data));
        let Some(data) = data else {
            return Err(NotAsked::NoData);
        };
        if attachments_unpacked && phase.takes_attachments() {
            let only_attachments = data
                .as_object()
                .is_some_and(|fields| fields.keys().all(|key| key == "attachments"));
            if only_attachments {
                return Err(NotAsked::NoData);
            }
        }
        if data.get("skip").is_some_and(is_truthy) {
            return Err(NotAsked::Skipped);
        }
        Ok(())
    }

    /// The secrets handed to `phase`'s environment: `{NAME: value}` from
    /// `<phase>_data.secrets` (values that are not strings are left out).
    pub fn secrets(&self, phase: Phase) -> Vec<(String, String)> {
        self.phase_data(phase)
            .and_then(|data| data.get("secrets"))
            .and_then(Value::as_object)
            .map(|secrets| {
                secrets
                    .iter()
                    .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the job waits for an attachments archive that has arrived.
    pub fn has_attachments(&self) -> bool {
        self.attachments_status.as_deref() == Some("complete")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(value: Value) -> JobDefinition {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_definition_serializes_back_to_what_was_received() {
        let received = json!({
            "job_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "job_queue": "q",
            "provision_data": null,
            "test_data": {"test_cmds": "true", "extra": [1, 2]},
            "global_timeout": 60,
            "unknown_field": {"kept": true},
            "exclude_agents": [],
        });
        let typed = definition(received.clone());
        assert_eq!(typed.global_timeout, Some(60));
        assert_eq!(serde_json::to_value(&typed).unwrap(), received);
    }

    #[test]
    fn fields_of_another_type_read_as_absent_and_the_job_still_runs() {
        let job = definition(json!({
            "job_id": 5,
            "job_queue": 7,
            "global_timeout": "60",
            "output_timeout": 60.5,
            "parent_job_id": null,
            "job_status_webhook": 1,
            "attachments_status": ["complete"],
            "test_data": {"test_cmds": "true"},
        }));
        assert_eq!(job.job_queue, None);
        assert_eq!(job.global_timeout, None);
        assert_eq!(job.output_timeout, None);
        assert!(!job.has_attachments());
        assert_eq!(job.asks_for(Phase::Test, false), Ok(()));
    }

    #[test]
    fn phases_run_by_the_references_rules() {
        let job = definition(json!({
            "provision_data": {"url": "x"},
            "firmware_update_data": {},
            "test_data": {"attachments": [{"agent": "a"}]},
            "allocate_data": {"allocate": true, "skip": 1},
        }));
        assert_eq!(job.asks_for(Phase::Setup, false), Ok(()));
        assert_eq!(job.asks_for(Phase::Provision, true), Ok(()));
        assert_eq!(
            job.asks_for(Phase::FirmwareUpdate, false),
            Err(NotAsked::NoData)
        );
        assert_eq!(job.asks_for(Phase::Test, false), Ok(()));
        assert_eq!(job.asks_for(Phase::Test, true), Err(NotAsked::NoData));
        assert_eq!(job.asks_for(Phase::Allocate, false), Err(NotAsked::Skipped));
        assert_eq!(job.asks_for(Phase::Reserve, false), Err(NotAsked::NoData));
    }

    #[test]
    fn only_string_secrets_reach_the_environment() {
        let job = definition(json!({"test_data": {"secrets": {"A": "a", "B": 2}}}));
        assert_eq!(
            job.secrets(Phase::Test),
            [("A".to_string(), "a".to_string())]
        );
        assert!(job.secrets(Phase::Provision).is_empty());
    }
}
