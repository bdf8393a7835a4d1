//! Agents (what each device host reports about itself), their provision history, the
//! queues they advertise with descriptions and images, and queue wait-time samples.

use serde_json::{Map, Value};

use super::error::Result;
use crate::job::time::Micros;

/// How many lines of an agent's log, and of its provision history, are kept.
pub(super) const KEPT_HISTORY: i64 = 100;

/// An agent's stored document: the fields it reported plus its provision streak.
pub struct AgentFields {
    pub name: String,
    pub fields: Map<String, Value>,
    pub updated_at: Micros,
}

pub struct ProvisionLogEntry {
    pub job_id: String,
    pub exit_code: i64,
    pub detail: Option<String>,
}

/// Agents from their stored rows: name, fields (JSON text), last report.
pub(super) fn parse_agents(rows: Vec<(String, String, Micros)>) -> Result<Vec<AgentFields>> {
    rows.into_iter()
        .map(|(name, fields, updated_at)| {
            Ok(AgentFields {
                name,
                fields: serde_json::from_str(&fields)?,
                updated_at,
            })
        })
        .collect()
}
